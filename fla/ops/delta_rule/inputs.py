"""Argument checks and input preparation shared by the delta-rule ops (plain and gated)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import check_gated_inputs, default_scale
from fla.ops.delta_rule.l2norm import l2norm_triton
from fla.utils import check_dtype, check_same_device, check_shape, select_backend


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, computed in float32 (float64 stays float64)."""
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    return (x32 * torch.rsqrt(x32.square().sum(-1, keepdim=True) + eps)).to(x.dtype)


def default_beta(beta: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
    """``beta`` or all ones ``[B, T, H]`` (``v``'s first three dims) when it is ``None`` (the plain
    delta rule: full replacement)."""
    return v.new_ones(v.shape[:3]) if beta is None else beta


def prepare_delta_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, float, str]:
    """The prologue of every public delta-rule op: check the inputs, default beta and scale, pick the backend.

    Shapes: q, k ``[B, T, H, K]``, v ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value
    heads, ``HV == H`` usually), beta ``[B, T, HV]`` (``None``: all ones), g ``[B, T, HV]`` (gated
    ops), initial_state ``[N, HV, K, V]``, cu_seqlens ``[N+1]``.
    Returns:
        beta (ones when ``None``), the scale (``K ** -0.5`` when ``None``) and the backend.
    """
    q_heads, k_heads = q, k
    if q.dim() == 4 and v.dim() == 4 and v.shape[2] != q.shape[2]:
        B, T, H, K = q.shape
        check_shape("k", k, (B, T, H, K), "[B, T, H, K] (as q)")
        if v.shape[2] % H:
            raise ValueError(
                f"v has shape {list(v.shape)}, expected [B, T, HV, V] with HV a multiple of q's H = {H} "
                "(grouped value heads)"
            )
        # the checks below see q and k with HV heads (views, nothing copied)
        q_heads, k_heads = (x[:, :, :1].expand(B, T, v.shape[2], K) for x in (q, k))
    check_gated_inputs(q_heads, k_heads, v, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens)
    beta = default_beta(beta, v)
    check_shape("beta", beta, v.shape[:3], "[B, T, HV]" if v.shape[2] != q.shape[2] else "[B, T, H]")
    check_dtype("beta", beta)
    check_same_device(q=q, beta=beta)
    return beta, default_scale(scale, k), select_backend(q, k, v, beta, g, initial_state)


def expand_groups(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k ``[B, T, H, K]`` repeated to ``v``'s ``HV`` heads (value head ``j`` reads q/k head
    ``j // (HV / H)``); unchanged when ``HV == H``. Autograd sums the gradients over each group."""
    groups = v.shape[2] // q.shape[2]
    if groups == 1:
        return q, k
    return q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)


def prepare_qk_beta(
    q: torch.Tensor,
    k: torch.Tensor,
    beta: torch.Tensor,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the op's options: L2-normalize q and k (differentiable; the Triton kernels of
    :mod:`fla.ops.delta_rule.l2norm` for the "triton" backend) and map beta to ``(0, 2)``."""
    if use_qk_l2norm_in_kernel:
        norm = l2norm_triton if backend == "triton" else l2norm
        q, k = norm(q), norm(k)
    if allow_neg_eigval:
        beta = beta * 2
    return q, k, beta
