"""fla 0.6.0's :func:`prepare_block_csr` in PyTorch: a per-query block selection (sparse attention, NSA) inverted
into CSR form, block -> the queries that selected it (what a block-parallel backward iterates over)."""

from __future__ import annotations

import torch

from fla.ops.utils.index import prepare_chunk_offsets, prepare_sequence_ids
from fla.utils.tensors import check_cu_seqlens


def prepare_block_csr(
    block_indices: torch.Tensor,
    block_counts: torch.Tensor | int,
    cu_seqlens: torch.Tensor | None,
    chunk_indices: torch.Tensor | None,
    num_blocks: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``block_indices`` (query -> selected blocks) into CSR (block -> selecting queries).

    A slot ``s`` of query ``t`` (batch ``b``, kv-head ``h``) counts when ``s < block_counts[b, t, h]`` and its block
    ``i = block_indices[b, t, h, s]`` has ``0 <= i < num_blocks`` and ``i * block_size <= t`` (causal; ``t`` is the
    token's index in the row, which for a packed row is the global index, as in fla).

    Args:
        block_indices: ``[B, T, H, S]`` selected block ids, ``-1`` for unused slots.
        block_counts: ``[B, T, H]`` valid slots per query, or one int for all.
        cu_seqlens: ``[N+1]`` with ``B == 1`` (varlen) or ``None``.
        chunk_indices: varlen only: the ``[NB_total, 2]`` block list of ``cu_seqlens`` (its row count sizes the
            block-id space).
        num_blocks: blocks per ``(batch, head)`` (dense), the upper bound of a block id.
        block_size: tokens per block.
    Returns:
        ``csr_indices`` int32 ``[B*T*H*S]``: the selecting queries' flat positions ``b * T + t``, grouped by block (in
        query order within a block; entries past ``csr_offsets[-1]`` are 0), and ``csr_offsets`` int32 ``[NB+1]``:
        block ``j`` owns ``csr_indices[csr_offsets[j]:csr_offsets[j+1]]``. Block ids: ``(b * H + h) * num_blocks + i``
        (dense, ``NB = B * H * num_blocks``) or ``(chunk_offsets[n] + i) * H + h`` for query ``t`` of sequence ``n``
        (varlen, ``NB = len(chunk_indices) * H``).
    """
    if block_indices.dim() != 4:
        raise ValueError(f"block_indices has shape {list(block_indices.shape)}, expected [B, T, H, S]")
    B, T, H, S = block_indices.shape
    device = block_indices.device
    if isinstance(block_counts, torch.Tensor) and block_counts.shape != (B, T, H):
        raise ValueError(f"block_counts has shape {list(block_counts.shape)}, expected [{B}, {T}, {H}] or an int")
    if cu_seqlens is not None and chunk_indices is None:
        raise ValueError("chunk_indices is required with cu_seqlens (prepare_chunk_indices(cu_seqlens, block_size))")
    check_cu_seqlens(cu_seqlens, T, B)
    i = block_indices.long()
    t = torch.arange(T, device=device)[None, :, None, None]  # [1, T, 1, 1]
    counts = block_counts[..., None] if isinstance(block_counts, torch.Tensor) else block_counts
    valid = (torch.arange(S, device=device) < counts) & (i >= 0) & (i < num_blocks) & (i * block_size <= t)
    h = torch.arange(H, device=device)[None, None, :, None]
    if cu_seqlens is None:
        NB = B * H * num_blocks
        block_id = (torch.arange(B, device=device)[:, None, None, None] * H + h) * num_blocks + i
    else:
        NB = chunk_indices.shape[0] * H
        base = prepare_chunk_offsets(cu_seqlens, block_size)[prepare_sequence_ids(cu_seqlens)]  # [T] first block
        block_id = (base[None, :, None, None] + i) * H + h
    query = (torch.arange(B, device=device)[:, None] * T + torch.arange(T, device=device)).view(B, T, 1, 1)
    block_id, query = block_id[valid], query.expand(B, T, H, S)[valid]  # [P] selections, in query order
    if block_id.numel() and int(block_id.max()) >= NB:
        raise ValueError(f"block_indices select block id {int(block_id.max())}, past the {NB} blocks of the layout")
    order = torch.sort(block_id, stable=True).indices
    csr_indices = torch.zeros(B * T * H * S, dtype=torch.int32, device=device)
    csr_indices[: order.numel()] = query[order].to(torch.int32)
    per_block = torch.bincount(block_id, minlength=NB)
    csr_offsets = torch.nn.functional.pad(per_block.cumsum(0), (1, 0)).to(torch.int32)
    return csr_indices, csr_offsets
