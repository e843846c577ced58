"""fla 0.6.0's ``fla.ops.common.chunk_scaled_dot_kkt.chunk_scaled_dot_kkt_fwd`` under its internal name: the
beta-scaled, gated ``k k^T`` of each chunk (the WY stage's input), for code that imports it from there. Vectorized
PyTorch over all chunks at once (our delta-rule ops compute these scores inside :mod:`.wy`'s kernels)."""

from __future__ import annotations

import torch

from fla.ops.utils.index import prepare_chunk_indices


def chunk_scaled_dot_kkt_fwd(
    k: torch.Tensor,
    g: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    output_dtype: torch.dtype = torch.float32,
    chunk_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """``A[t, h, j] = beta_t k_t . k_s 2^(g_t - g_s)`` for the chunk's earlier tokens ``s`` (column ``j`` is ``s``'s
    offset in the chunk; 0 on and above the diagonal and past the sequence), fla 0.6.0's convention: ``g`` is the
    chunk-local cumsum of the log decays in base 2.

    Args:
        k: ``[B, T, H, K]``; g: ``[B, T, HV]`` or ``None``; beta: ``[B, T, HV]`` (``HV`` a multiple of ``H``:
            grouped value heads share their key head).
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``); chunks restart at every sequence.
        chunk_size: ``BT``; output_dtype: the result's dtype; chunk_indices: ignored (derived from ``cu_seqlens``).
    Returns:
        ``A [B, T, HV, BT]``.
    """
    if beta is None:
        raise ValueError("chunk_scaled_dot_kkt_fwd: beta is required ([B, T, HV])")
    B, T, H, K = k.shape
    HV, BT = beta.shape[2], chunk_size
    if beta.shape[:2] != (B, T) or HV % H != 0:
        raise ValueError(f"chunk_scaled_dot_kkt_fwd: beta has shape {tuple(beta.shape)}, expected [B, T, HV] with "
                         f"B, T = {B}, {T} and HV a multiple of H = {H}")  # fmt: skip
    if g is not None and g.shape != beta.shape:
        raise ValueError(f"chunk_scaled_dot_kkt_fwd: g has shape {tuple(g.shape)}, expected beta's {tuple(beta.shape)}")
    if cu_seqlens is None:  # batch rows as sequences of T tokens
        cu_seqlens = torch.arange(0, (B + 1) * T, T, device=k.device)
    elif B != 1:
        raise ValueError(f"chunk_scaled_dot_kkt_fwd: cu_seqlens needs B == 1, got B = {B}")
    chunks = prepare_chunk_indices(cu_seqlens, BT).long()  # [NC, 2]: (sequence, chunk in it)
    bos, eos = cu_seqlens[:-1].long()[chunks[:, 0]], cu_seqlens[1:].long()[chunks[:, 0]]
    pos = bos[:, None] + chunks[:, 1:] * BT + torch.arange(BT, device=k.device)  # [NC, BT] flat token indices
    valid = pos < eos[:, None]
    pos = torch.where(valid, pos, 0)
    kf = k.reshape(B * T, H, K)[pos].float().repeat_interleave(HV // H, dim=2)  # [NC, BT, HV, K]
    A = torch.einsum("cihk,cjhk->chij", kf, kf)  # [NC, HV, BT(i), BT(j)]
    tril = torch.ones(BT, BT, dtype=torch.bool, device=k.device).tril(-1)  # earlier tokens of the chunk
    if g is not None:
        gc = g.reshape(B * T, HV)[pos].float().transpose(1, 2)  # [NC, HV, BT]
        A = A * torch.exp2(torch.where(tril, gc[..., :, None] - gc[..., None, :], 0.0))
    A = A * beta.reshape(B * T, HV)[pos].float().transpose(1, 2)[..., None]
    keep = tril & valid[:, None, :, None] & valid[:, None, None, :]
    A = torch.where(keep, A, 0.0).permute(0, 2, 1, 3)  # [NC, BT(i), HV, BT(j)]
    out = torch.zeros(B * T, HV, BT, dtype=output_dtype, device=k.device)
    out[pos[valid]] = A[valid].to(output_dtype)
    return out.view(B, T, HV, BT)


__all__ = ["chunk_scaled_dot_kkt_fwd"]
