"""cu_seqlens helpers (FlashAttention-style packed varlen batches).

``cu_seqlens`` is ``[N+1]`` int32/int64 with ``cu_seqlens[0] == 0`` and
``cu_seqlens[-1] == T`` (total tokens of the single packed row).
"""

from __future__ import annotations

import torch

from fla.utils.tensors import last_call_cache


def prepare_lens(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Sequence lengths ``[N]`` from ``cu_seqlens [N+1]``."""
    return cu_seqlens[1:] - cu_seqlens[:-1]


@last_call_cache
def prepare_position_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its own sequence, ``[T]`` (restarts at 0 per sequence)."""
    lens = prepare_lens(cu_seqlens)
    total = int(cu_seqlens[-1])
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lens.long(), output_size=total)
    return torch.arange(total, device=cu_seqlens.device) - starts


@last_call_cache
def prepare_sequence_ids(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Index of the sequence each token belongs to, ``[T]``."""
    lens = prepare_lens(cu_seqlens).long()
    ids = torch.arange(lens.numel(), device=cu_seqlens.device)
    return torch.repeat_interleave(ids, lens, output_size=int(cu_seqlens[-1]))


@last_call_cache
def prepare_chunk_indices(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[num_chunks, 2]`` int32 rows ``(sequence index, chunk index within the sequence)``.

    Every sequence is cut into ``ceil(len / chunk_size)`` chunks (a length-0 sequence
    contributes none); kernels launch one program per row.
    """
    n_chunks = (prepare_lens(cu_seqlens).long() + chunk_size - 1) // chunk_size
    seq = torch.repeat_interleave(torch.arange(n_chunks.numel(), device=cu_seqlens.device), n_chunks)
    first = torch.cumsum(n_chunks, 0) - n_chunks
    within = torch.arange(seq.numel(), device=cu_seqlens.device) - first[seq]
    return torch.stack([seq, within], 1).to(torch.int32)


@last_call_cache
def prepare_chunk_offsets(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N+1]`` cumulative chunk counts: sequence ``i`` owns chunks ``[off[i], off[i+1])``."""
    n_chunks = (prepare_lens(cu_seqlens).long() + chunk_size - 1) // chunk_size
    return torch.cat([n_chunks.new_zeros(1), torch.cumsum(n_chunks, 0)])
