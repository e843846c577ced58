"""cu_seqlens helpers (FlashAttention-style packed varlen batches).

``cu_seqlens`` is ``[N+1]`` int32/int64 with ``cu_seqlens[0] == 0`` and
``cu_seqlens[-1] == T`` (total tokens of the single packed row). A padding ``mask`` is
``[B, L]`` bool/int with 1 for real tokens; ``lens`` is ``[N]`` integer sequence lengths.
"""

from __future__ import annotations

import torch

from fla.utils.sizes import cdiv
from fla.utils.tensors import check_cu_seqlens, last_call_cache


def check_mask(mask: torch.Tensor, name: str = "mask") -> None:
    """Raise ``ValueError`` unless ``mask`` is a 2-D ``[B, L]`` bool or integer padding mask."""
    if mask.dim() != 2 or mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(
            f"{name} must be a 2-D [B, L] bool/int padding mask, got shape {list(mask.shape)} {mask.dtype}"
        )


def _check_varlen(cu_seqlens: torch.Tensor) -> None:
    """``cu_seqlens`` checks that read its values (a host sync): 1-D integer, from 0, non-decreasing."""
    total = int(cu_seqlens[-1]) if cu_seqlens.dim() == 1 and cu_seqlens.numel() else 0
    check_cu_seqlens(cu_seqlens, total=total, batch=1)


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


@last_call_cache
def prepare_lens_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Real tokens per row, ``[B]`` int32, of a padding ``mask [B, L]``."""
    check_mask(mask)
    return mask.bool().sum(-1, dtype=torch.int32)


@last_call_cache
def prepare_cu_seqlens_from_lens(lens: torch.Tensor, dtype: torch.dtype | None = torch.int32) -> torch.Tensor:
    """``cu_seqlens [N+1]`` (``dtype``; ``None``: the cumsum's default, int64) from lengths ``lens [N]``."""
    if lens.dim() != 1 or lens.dtype.is_floating_point or lens.dtype.is_complex:
        raise ValueError(f"lens must be a 1-D integer tensor [N], got shape {list(lens.shape)} {lens.dtype}")
    if bool((lens < 0).any()):
        raise ValueError(f"lens must be non-negative, got {lens.tolist()}")
    return torch.nn.functional.pad(lens.cumsum(0, dtype=dtype), (1, 0))


@last_call_cache
def prepare_cu_seqlens_from_mask(mask: torch.Tensor, dtype: torch.dtype | None = torch.int32) -> torch.Tensor:
    """``cu_seqlens [B+1]`` of the real tokens of each row of a padding ``mask [B, L]`` (rows in order)."""
    return prepare_cu_seqlens_from_lens(prepare_lens_from_mask(mask), dtype)


@last_call_cache
def _token_indices(cu_seqlens: torch.Tensor) -> torch.Tensor:
    _check_varlen(cu_seqlens)
    return torch.stack([prepare_sequence_ids(cu_seqlens), prepare_position_ids(cu_seqlens)], 1).to(cu_seqlens.dtype)


def prepare_token_indices(cu_seqlens: torch.Tensor, cu_seqlens_cpu: torch.Tensor | None = None) -> torch.Tensor:
    """``[T, 2]`` rows ``(sequence index, position within the sequence)`` per token, in ``cu_seqlens``' dtype.

    ``cu_seqlens_cpu`` (fla's host copy, to save a sync) is accepted; the result does not depend on it.
    Cached per ``cu_seqlens`` tensor.
    """
    return _token_indices(cu_seqlens)


@last_call_cache
def _max_num_splits(cu_seqlens: torch.Tensor, chunk_size: int) -> int:
    _check_varlen(cu_seqlens)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return cdiv(int(prepare_lens(cu_seqlens).max()), chunk_size)


def get_max_num_splits(cu_seqlens: torch.Tensor, chunk_size: int, cu_seqlens_cpu: torch.Tensor | None = None) -> int:
    """Chunks of ``chunk_size`` tokens in the longest sequence: ``ceil(max len / chunk_size)``.

    ``cu_seqlens_cpu``, when given, is read instead of ``cu_seqlens`` (same values, no device sync).
    """
    return _max_num_splits(cu_seqlens if cu_seqlens_cpu is None else cu_seqlens_cpu, chunk_size)


def prepare_chunk_indices_static(
    cu_seqlens: torch.Tensor, chunk_size: int, nt_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`prepare_chunk_indices` and :func:`prepare_chunk_offsets` with fixed shapes and no host sync
    (for CUDA-graph capture; not cached, so a captured graph records the construction).

    Args:
        cu_seqlens: ``[N+1]``; may end with zero-length sequences (padding up to a fixed ``N``).
        nt_max: rows of the result, at least the real chunk count.
    Returns:
        ``chunk_indices [nt_max, 2]`` rows ``(sequence, chunk within it)``, rows past the real chunk count
        ``(-1, 0)``; ``chunk_offsets [N+1]``. Both in ``cu_seqlens``' dtype. Values are not checked (no sync).
    """
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"cu_seqlens must be 1-D int32/int64 [N+1], got shape {list(cu_seqlens.shape)} {cu_seqlens.dtype}"
        )
    if chunk_size < 1 or nt_max < 0:
        raise ValueError(f"chunk_size must be >= 1 and nt_max >= 0, got chunk_size={chunk_size}, nt_max={nt_max}")
    n_chunks = torch.div(prepare_lens(cu_seqlens).long() + chunk_size - 1, chunk_size, rounding_mode="floor")
    offsets = torch.nn.functional.pad(n_chunks.cumsum(0), (1, 0))  # [N+1]
    slot = torch.arange(nt_max, device=cu_seqlens.device)
    # slot s belongs to the sequence n with offsets[n] <= s < offsets[n+1]: the number of sequence ends <= s
    seq = torch.searchsorted(offsets[1:], slot, right=True)
    real = slot < offsets[-1]
    seq_c = seq.clamp(max=n_chunks.numel() - 1)  # padding rows would index past the end
    within = slot - offsets[seq_c]
    indices = torch.stack([torch.where(real, seq, -1), torch.where(real, within, 0)], 1)
    return indices.to(cu_seqlens.dtype), offsets.to(cu_seqlens.dtype)
