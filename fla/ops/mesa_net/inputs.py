"""Argument checks of the MesaNet ops (errors name the argument and the shapes), run before any kernel."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape


def check_mesa_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    lamb: torch.Tensor,
    h_kk: torch.Tensor | None,
    h_kv: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    max_CG_iteration: int,
    names: tuple[str, str] = ("h_kk_init", "h_kv_init"),
) -> int:
    """Validate the inputs of a MesaNet op; return ``N``, the number of sequences.

    Shapes: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g, beta ``[B, T, H]``, lamb ``[H, K]``, states
    ``[N, H, K, K]`` and ``[N, H, K, V]`` (``names``: their public names), cu_seqlens ``[N+1]`` (``B == 1``).
    """
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, T, H, K]")
    B, T, H, K = q.shape
    check_shape("k", k, (B, T, H, K), "[B, T, H, K] (as q)")
    check_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    check_shape("g", g, (B, T, H), "[B, T, H] (one log decay per token and head)")
    check_shape("beta", beta, (B, T, H), "[B, T, H]")
    check_shape("lamb", lamb, (H, K), "[H, K]")
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta), ("lamb", lamb)):
        check_dtype(name, t)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has dtype {q.dtype}; q, k and v must share one dtype")
    check_same_device(q=q, k=k, v=v, g=g, beta=beta, lamb=lamb, **{names[0]: h_kk, names[1]: h_kv})
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    for name, t, width in ((names[0], h_kk, K), (names[1], h_kv, v.shape[-1])):
        if t is not None:
            check_shape(name, t, (N, H, K, width), f"[N, H, K, {'K' if width == K and t is h_kk else 'V'}]")
            check_dtype(name, t)
    if isinstance(max_CG_iteration, bool) or not isinstance(max_CG_iteration, int) or max_CG_iteration < 0:
        raise ValueError(f"max_CG_iteration={max_CG_iteration!r} must be an int >= 0")
    return N


__all__ = ["check_mesa_inputs"]
