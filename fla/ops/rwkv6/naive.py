"""RWKV6 in plain PyTorch: the recurrent reference and the chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``, ``w`` log decays, ``u`` the bonus)::

    o_t = scale * r_t (S_{t-1} + diag(u) k_t^T v_t)
    S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_gated_torch
from fla.ops.common.inputs import default_scale
from fla.ops.utils.varlen import per_sequence


def _recurrence(r, k, v, w, u, h0, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(r.dtype, torch.float32)
    B, T, H, K = r.shape
    r, k, v, w = (x.to(dtype) for x in (r, k, v, w))
    u = u.to(dtype)[None, :, :, None]  # [1, H, K, 1]
    S = r.new_zeros(B, H, K, v.shape[-1]) if h0 is None else h0.to(dtype)
    outs = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # [B, H, K, V]
        outs.append(torch.einsum("bhk,bhkv->bhv", r[:, t] * scale, S + u * kv))
        S = S * w[:, t].exp()[..., None] + kv
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, v.shape[-1]).to(dtype)
    return o, S


def naive_recurrent_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token RWKV6 (the reference; float64 inputs give a float64 result).

    Args:
        r, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; w: ``[B, T, H, K]`` log decays; u: ``[H, K]``;
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    scale = default_scale(scale, k)
    step = lambda r, k, v, w, h0: _recurrence(r, k, v, w, u, h0, scale)
    if cu_seqlens is None:
        o, ht = step(r, k, v, w, initial_state)
    else:
        o, ht = per_sequence(step, [r, k, v, w], initial_state, cu_seqlens)
    return o, ht if output_final_state else None


def naive_chunk_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked RWKV6 in PyTorch (the CPU path of :func:`fla.ops.rwkv6.chunk_rwkv6`): the GLA chunked form
    with the bonus (:func:`fla.ops.common.chunk_torch.chunk_gated_torch` with ``u``); same contract."""
    o, ht = chunk_gated_torch(
        r, k, v, gk=w, scale=default_scale(scale, k), initial_state=initial_state, cu_seqlens=cu_seqlens, u=u
    )
    return o.to(v.dtype), ht if output_final_state else None
