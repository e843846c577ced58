"""Argument checks shared by the gated linear-attention ops (errors name the argument and shapes)."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape, select_backend


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
) -> tuple[float, str]:
    """The prologue of every public gated op: check the inputs, default the scale, pick the backend.

    Args:
        gates: the op's gates by their :func:`check_gated_inputs` names (``g``, ``g_gamma``, ``gk``,
            ``gv``), in the op's argument order; ``gk_name``: the public name of ``gk``.
    Returns:
        the scale (``K ** -0.5`` when ``None``) and the backend (``"torch"`` or ``"triton"``).
    """
    check_gated_inputs(q, k, v, **gates, initial_state=initial_state, cu_seqlens=cu_seqlens, gk_name=gk_name)
    return default_scale(scale, k), select_backend(q, k, v, *gates.values(), initial_state)
