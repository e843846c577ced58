"""Linear attention in plain PyTorch: recurrent reference and chunked CPU path.

Recurrence (per head)::

    S_t = S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t
    normalize:  z_t = z_{t-1} + k_t,  o_t <- o_t / (scale * q_t . z_t + 1e-10)

With ``normalize`` the state is the pair ``(S [N, H, K, V], z [N, 1, H, K])`` (fla's layout).
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_gated_torch
from fla.ops.common.inputs import default_scale
from fla.ops.linear_attn.utils import NORMALIZER_EPS, apply_normalization, split_state


def _linear_recurrence(q, k, v, h0, z0, scale: float, normalize: bool):
    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dtype)
    z = q.new_zeros(B, H, K) if z0 is None else z0[:, 0].to(dtype)
    outs = []
    for t in range(T):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        o = torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S)
        if normalize:
            z = z + k[:, t]
            o = o / ((q[:, t] * scale * z).sum(-1, keepdim=True) + NORMALIZER_EPS)
        outs.append(o)
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, V)
    return o, S, z[:, None]


def naive_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | tuple | None = None,
    output_final_state: bool = False,
    normalize: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """Token-by-token linear attention (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``, or with ``normalize`` also ``(S0, z0 [N, 1, H, K])``.
        normalize: divide by ``scale * q_t . z_t`` (running key sum ``z``).
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and, when ``output_final_state``, ``S_T`` (or ``(S_T, z_T)`` with
        ``normalize``).
    """
    scale = default_scale(scale, k)
    h0, z0 = split_state(initial_state, normalize)
    if cu_seqlens is None:
        o, ht, zt = _linear_recurrence(q, k, v, h0, z0, scale, normalize)
    else:
        pick = lambda x, i: None if x is None else x[i : i + 1]
        bounds = cu_seqlens.tolist()
        parts = [
            _linear_recurrence(q[:, a:b], k[:, a:b], v[:, a:b], pick(h0, i), pick(z0, i), scale, normalize)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
        ]
        o, ht, zt = (torch.cat(x, dim) for x, dim in zip(zip(*parts), (1, 0, 0)))
    if not output_final_state:
        return o, None
    return o, ((ht, zt) if normalize else ht)


def naive_chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | tuple | None = None,
    output_final_state: bool = False,
    normalize: bool = True,
    cu_seqlens: torch.Tensor | None = None,
):
    """Chunked linear attention in PyTorch (CPU path of :func:`fla.ops.linear_attn.chunk_linear_attn`)."""
    scale = default_scale(scale, k)
    h0, z0 = split_state(initial_state, normalize)
    o, ht = chunk_gated_torch(q, k, v, scale=scale, initial_state=h0, cu_seqlens=cu_seqlens)
    return apply_normalization(o.to(v.dtype), q, k, ht, z0, scale, normalize, output_final_state, cu_seqlens)
