"""How a batch is cut into chunks: the host-side bookkeeping every chunk stage launches with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fla.ops.utils.index import prepare_chunk_indices, prepare_chunk_offsets
from fla.utils.sizes import cdiv


@dataclass(frozen=True)
class ChunkLayout:
    """Chunking of a ``[B, T, ...]`` batch (dense) or a packed ``[1, T, ...]`` row (varlen).

    Attributes:
        chunk_size: tokens per chunk (``BT``).
        batch, seq_len: ``B`` and ``T`` of the inputs; num_seqs: ``N`` (``B``, or ``len(cu_seqlens) - 1``).
        row_chunks: grid rows of the per-chunk kernels: ``cdiv(T, BT)`` per batch row (dense) or
            the total chunk count (varlen, where grid row == global chunk index).
        cu_seqlens, chunk_indices ``[NC, 2]``, chunk_offsets ``[N+1]``: varlen bounds (else ``None``).
    """

    chunk_size: int
    batch: int
    seq_len: int
    num_seqs: int
    row_chunks: int
    cu_seqlens: torch.Tensor | None = None
    chunk_indices: torch.Tensor | None = None
    chunk_offsets: torch.Tensor | None = None

    @classmethod
    def build(cls, x: torch.Tensor, cu_seqlens: torch.Tensor | None, chunk_size: int) -> ChunkLayout:
        """Layout of ``x [B, T, ...]`` (and ``cu_seqlens [N+1]`` when packed)."""
        B, T = x.shape[:2]
        if cu_seqlens is None:
            return cls(chunk_size, B, T, B, cdiv(T, chunk_size))
        indices = prepare_chunk_indices(cu_seqlens, chunk_size)
        offsets = prepare_chunk_offsets(cu_seqlens, chunk_size)
        return cls(chunk_size, B, T, cu_seqlens.numel() - 1, indices.shape[0], cu_seqlens, indices, offsets)

    def states_shape(self, H: int, K: int, V: int) -> tuple[int, ...]:
        """Shape of per-chunk states: ``[B, NT, H, K, V]`` (dense) or ``[1, NC, H, K, V]`` (varlen)."""
        return (self.batch, self.row_chunks, H, K, V)
