"""Output normalization of linear attention (shared by the chunk, recurrent and CPU paths).

``z_t = z_0 + sum_{s <= t} k_s`` per sequence and ``o_t <- o_t / (scale * q_t . z_t + 1e-10)``.
It runs in PyTorch on top of either backend (a cumsum and a dot per token); autograd covers it.
"""

from __future__ import annotations

import torch

from fla.ops.utils.index import prepare_sequence_ids
from fla.ops.utils.varlen import pad_sequences, unpad_sequences

NORMALIZER_EPS = 1e-10


def split_state(initial_state: torch.Tensor | tuple | None, normalize: bool):
    """``initial_state`` -> ``(S0 [N, H, K, V] or None, z0 [N, 1, H, K] or None)``."""
    if isinstance(initial_state, tuple | list):
        if not normalize:
            raise ValueError("initial_state is an (S, z) pair, which only normalize=True uses; pass S alone")
        h0, z0 = initial_state
        return h0, z0
    return initial_state, None


def apply_normalization(
    o: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    ht: torch.Tensor | None,
    z0: torch.Tensor | None,
    scale: float,
    normalize: bool,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
):
    """Normalize ``o [B, T, H, V]`` (when ``normalize``) and assemble the returned final state.

    Returns:
        ``o`` (in ``o``'s dtype) and ``None`` / ``ht`` / ``(ht, z_T [N, 1, H, K])``.
    """
    if not normalize:
        return o, ht if output_final_state else None
    dtype = torch.promote_types(q.dtype, torch.float32)
    kf = k.to(dtype)
    if cu_seqlens is None:
        z = kf.cumsum(1)
        zt = kf.sum(1, keepdim=True)
    else:
        padded = pad_sequences(kf, cu_seqlens)
        z = unpad_sequences(padded.cumsum(1), cu_seqlens)
        zt = padded.sum(1, keepdim=True)
    if z0 is not None:
        z0 = z0.to(dtype)
        z = z + (z0 if cu_seqlens is None else z0[:, 0][prepare_sequence_ids(cu_seqlens)][None])
        zt = zt + z0
    denom = (q.to(dtype) * scale * z).sum(-1, keepdim=True) + NORMALIZER_EPS
    o = (o.to(dtype) / denom).to(o.dtype)
    return o, (ht, zt) if output_final_state else None
