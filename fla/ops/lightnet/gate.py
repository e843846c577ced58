"""LightNet's key normalization: per-channel log-cumulative-sum-exp of the key logits, per sequence.

For key logits ``x [B, T, H, K]`` and each channel, within each sequence (restarting at every
``cu_seqlens`` boundary)::

    z_t = log(exp(z0) + sum_{s <= t} exp(x_s))          z0: the carried log-normalizer (or -inf)
    k_t = exp(x_t - z_t)                                the normalized key, in (0, 1]
    g_t = z_{t-1} - z_t  (<= 0; 0 for a first token without z0)     the GLA log decay

Computed in float32 (float64 for float64 inputs) with ``torch.logcumsumexp``, so it is exact and
differentiable by autograd. Packed rows are cut into pieces of ``PIECE`` tokens of one sequence:
a log-cumsum inside each piece, then an exclusive log-cumsum of the piece totals per sequence (the
carry), so the work is ``O(T + N * PIECE)`` and no sum crosses a sequence boundary.
"""

from __future__ import annotations

import torch

from fla.ops.utils.index import prepare_chunk_indices, prepare_lens, prepare_position_ids, prepare_sequence_ids

PIECE = 64


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _neg_inf(like: torch.Tensor, shape) -> torch.Tensor:
    return like.new_full(shape, float("-inf"))


def log_normalizers(
    x: torch.Tensor, z0: torch.Tensor | None, cu_seqlens: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z, z_prev, z_final)``: ``z [B, T, H, K]``, ``z`` one token earlier (``z0`` or ``-inf`` at each
    sequence start) and the final ``[N, 1, H, K]`` (``z0`` or ``-inf`` for an empty sequence)."""
    dtype = _compute_dtype(x)
    xf = x.to(dtype)
    B, T, H, K = x.shape
    if cu_seqlens is None:
        start = _neg_inf(xf, (B, 1, H, K)) if z0 is None else z0.to(dtype)
        if T == 0:
            return xf, xf, start.clone()
        z = torch.logcumsumexp(xf, 1)
        if z0 is not None:
            z = torch.logaddexp(start, z)
        return z, torch.cat([start, z[:, :-1]], 1), z[:, -1:]
    N = cu_seqlens.numel() - 1
    lens = prepare_lens(cu_seqlens).long()
    start = _neg_inf(xf, (N, 1, H, K)) if z0 is None else z0.to(dtype)
    if T == 0:
        return xf, xf, start.clone()
    seq, pos = prepare_sequence_ids(cu_seqlens), prepare_position_ids(cu_seqlens)
    pieces = prepare_chunk_indices(cu_seqlens, PIECE).long()  # [P, 2]: (sequence, piece within it)
    P = pieces.shape[0]
    counts = (lens + PIECE - 1) // PIECE
    offsets = torch.cumsum(counts, 0) - counts
    piece = offsets[seq] + pos // PIECE
    # within each piece (zeros after a sequence's end never reach an earlier position)
    local = torch.logcumsumexp(xf.new_zeros(P, PIECE, H, K).index_put((piece, pos % PIECE), xf[0]), 1)
    piece_len = (lens[pieces[:, 0]] - pieces[:, 1] * PIECE).clamp(max=PIECE)
    totals = local[torch.arange(P, device=x.device), piece_len - 1]  # [P, H, K]
    # carry: log-sum of the earlier pieces of the same sequence (exclusive), plus z0
    per_seq = xf.new_zeros(N, int(counts.max()), H, K).index_put((pieces[:, 0], pieces[:, 1]), totals)
    carry = torch.cat([_neg_inf(xf, (N, 1, H, K)), torch.logcumsumexp(per_seq, 1)[:, :-1]], 1)
    if z0 is not None:
        carry = torch.logaddexp(start, carry)
    z = torch.logaddexp(local[piece, pos % PIECE], carry[seq, pos // PIECE])  # [T, H, K]
    z_prev = torch.where((pos == 0)[:, None, None], start[seq, 0], torch.cat([start[:1, 0], z[:-1]], 0))
    last = (cu_seqlens[1:].long() - 1).clamp(min=0)
    z_final = torch.where((lens > 0)[:, None, None, None], z[last][:, None], start)
    return z[None], z_prev[None], z_final


def lightnet_gates(
    x: torch.Tensor, z0: torch.Tensor | None, cu_seqlens: torch.Tensor | None, key_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(k [B, T, H, K] key_dtype, g [B, T, H, K] float32/64, z_final [N, 1, H, K] float32/64)`` (module docstring)."""
    z, z_prev, z_final = log_normalizers(x, z0, cu_seqlens)
    k = torch.exp(x.to(z.dtype) - z).to(key_dtype)
    g = torch.where(torch.isinf(z_prev), torch.zeros_like(z), z_prev - z)
    return k, g, z_final


__all__ = ["PIECE", "lightnet_gates", "log_normalizers"]
