"""Argument checks and input preparation shared by the delta-rule ops (plain and gated)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import check_gated_inputs, default_scale
from fla.utils import check_dtype, check_same_device, check_shape, select_backend


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, computed in float32 (float64 stays float64)."""
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    return (x32 * torch.rsqrt(x32.square().sum(-1, keepdim=True) + eps)).to(x.dtype)


def default_beta(beta: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """``beta`` or all ones ``[B, T, H]`` when it is ``None`` (the plain delta rule: full replacement)."""
    return q.new_ones(q.shape[:3]) if beta is None else beta


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

    Shapes: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, beta ``[B, T, H]`` (``None``: all ones),
    g ``[B, T, H]`` (gated ops), initial_state ``[N, H, K, V]``, cu_seqlens ``[N+1]``.
    Returns:
        beta (ones when ``None``), the scale (``K ** -0.5`` when ``None``) and the backend.
    """
    check_gated_inputs(q, k, v, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens)
    beta = default_beta(beta, q)
    check_shape("beta", beta, q.shape[:3], "[B, T, H]")
    check_dtype("beta", beta)
    check_same_device(q=q, beta=beta)
    return beta, default_scale(scale, k), select_backend(q, k, v, beta, g, initial_state)


def prepare_qk_beta(
    q: torch.Tensor,
    k: torch.Tensor,
    beta: torch.Tensor,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the op's options: L2-normalize q and k (differentiable) and map beta to ``(0, 2)``."""
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if allow_neg_eigval:
        beta = beta * 2
    return q, k, beta
