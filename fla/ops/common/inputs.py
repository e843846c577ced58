"""Argument checks and input preparation shared by the gated linear-attention ops and the delta-rule ops
(errors name the argument and shapes)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape


def check_gated_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    g_name: str = "g",
    gk_name: str = "gk",
) -> int:
    """Validate the inputs of a gated linear-attention op; return ``N``, the number of sequences.

    Shapes: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g ``[B, T, H]``, gk ``[B, T, H, K]``,
    gv ``[B, T, H, V]``, g_gamma ``[H]``, initial_state ``[N, H, K, V]``, cu_seqlens ``[N+1]``
    (then ``B == 1``). ``g_name`` / ``gk_name`` are the names the public op uses for them.
    """
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, T, H, K]")
    B, T, H, K = q.shape
    check_shape("k", k, (B, T, H, K), "[B, T, H, K] (as q)")
    check_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    V = v.shape[-1]
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_dtype(name, t)
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has dtype {q.dtype}; q, k and v must share one dtype")
    if g is not None:
        check_shape(g_name, g, (B, T, H), "[B, T, H]")
        check_dtype(g_name, g)
    if gk is not None:
        check_shape(gk_name, gk, (B, T, H, K), "[B, T, H, K]")
        check_dtype(gk_name, gk)
    if gv is not None:
        check_shape("gv", gv, (B, T, H, V), "[B, T, H, V]")
        check_dtype("gv", gv)
    if g_gamma is not None:
        check_shape("g_gamma", g_gamma, (H,), "[H]")
        check_dtype("g_gamma", g_gamma)
    check_same_device(q=q, k=k, v=v, g=g, gk=gk, gv=gv, g_gamma=g_gamma, initial_state=initial_state)
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        check_shape("initial_state", initial_state, (N, H, K, V), "[N, H, K, V]")
        check_dtype("initial_state", initial_state)
    return N


def default_scale(scale: float | None, k: torch.Tensor) -> float:
    """``scale`` or ``K ** -0.5`` when it is ``None``."""
    return float(k.shape[-1] ** -0.5) if scale is None else float(scale)


def prepare_gated_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    gk_name: str = "gk",
    **gates: torch.Tensor | None,
) -> float:
    """The prologue of every public gated op: check the inputs and default the scale.

    Args:
        gates: the op's gates by their :func:`check_gated_inputs` names (``g``, ``g_gamma``, ``gk``,
            ``gv``); ``gk_name``: the public name of ``gk``.
    Returns:
        the scale (``K ** -0.5`` when ``None``).
    """
    check_gated_inputs(q, k, v, **gates, initial_state=initial_state, cu_seqlens=cu_seqlens, gk_name=gk_name)
    return default_scale(scale, k)


def total_log_gate(g: torch.Tensor | None, g_gamma: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    """``g + g_gamma`` as one ``[B, T, H]`` scalar log gate (``None`` when both are ``None``): the PyTorch
    paths' form of the scalar gates."""
    if g_gamma is None:
        return g
    gamma = g_gamma.to(torch.promote_types(g_gamma.dtype, torch.float32))
    return gamma.expand(q.shape[:3]) if g is None else g + gamma


# the delta-rule family: beta, grouped value heads, the q/k L2 norm option


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
    gk: torch.Tensor | None = None,
    gk_name: str = "gk",
) -> tuple[torch.Tensor, float]:
    """The prologue of every public delta-rule op: check the inputs, default beta and scale.

    Shapes: q, k ``[B, T, H, K]``, v ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value
    heads, ``HV == H`` usually), beta ``[B, T, HV]`` (``None``: all ones), g ``[B, T, HV]`` (gated
    ops) or gk ``[B, T, HV, K]`` (per-key-channel gate, KDA; ``gk_name`` its public name),
    initial_state ``[N, HV, K, V]``, cu_seqlens ``[N+1]``.
    Returns:
        beta (ones when ``None``) and the scale (``K ** -0.5`` when ``None``).
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
    check_gated_inputs(
        q_heads, k_heads, v, g=g, gk=gk, initial_state=initial_state, cu_seqlens=cu_seqlens, gk_name=gk_name
    )
    if g is not None and gk is not None:
        raise ValueError(f"a delta-rule op takes a scalar gate g or a vector gate {gk_name}, not both")
    beta = default_beta(beta, v)
    check_shape("beta", beta, v.shape[:3], "[B, T, HV]" if v.shape[2] != q.shape[2] else "[B, T, H]")
    check_dtype("beta", beta)
    check_same_device(q=q, beta=beta)
    return beta, default_scale(scale, k)


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
    norm: Callable[[torch.Tensor], torch.Tensor] = l2norm,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the op's options: L2-normalize q and k with ``norm`` (differentiable: :func:`l2norm` on the
    PyTorch path, :func:`fla.ops.common.l2norm.l2norm_triton` on the Triton one) and map beta to ``(0, 2)``."""
    if use_qk_l2norm_in_kernel:
        q, k = norm(q), norm(k)
    if allow_neg_eigval:
        beta = beta * 2
    return q, k, beta
