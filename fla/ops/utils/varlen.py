"""Packed varlen rows <-> padded batches, and a per-sequence loop for references.

A packed row is ``[1, T, ...]`` with ``cu_seqlens [N+1]``; the padded batch is ``[N, T_max, ...]``
with zeros after each sequence's end. Both directions are plain indexing, so autograd flows.
:func:`pack_sequence` / :func:`unpack_sequence` are fla 0.6.0's flavour: packed ``[T, ...]`` (no batch
dimension), padding on either side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fla.ops.utils.index import (
    _check_varlen,
    prepare_chunk_indices,
    prepare_lens,
    prepare_position_ids,
    prepare_sequence_ids,
)


def pad_sequences(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """``[1, T, ...]`` packed row -> ``[N, T_max, ...]`` zero-padded batch (``T_max >= 1``)."""
    lens = prepare_lens(cu_seqlens)
    n, t_max = lens.numel(), max(int(lens.max()), 1)
    seq, pos = prepare_sequence_ids(cu_seqlens), prepare_position_ids(cu_seqlens)
    out = x.new_zeros(n, t_max, *x.shape[2:])
    return out.index_put((seq, pos), x[0])


def unpad_sequences(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """``[N, T_max, ...]`` padded batch -> ``[1, T, ...]`` packed row (inverse of :func:`pad_sequences`)."""
    seq, pos = prepare_sequence_ids(cu_seqlens), prepare_position_ids(cu_seqlens)
    return x[seq, pos].unsqueeze(0)


def _chunk_bounds(batch: int, seq_len: int, chunk_size: int, cu_seqlens: torch.Tensor | None, device) -> torch.Tensor:
    """The chunks of a ``[B, T, ...]`` batch (or a packed row with ``cu_seqlens``) as the sequences of its flattened
    ``[1, B*T, ...]`` row: ``[NC+1]`` int64 bounds, chunks of ``chunk_size`` tokens from every sequence start."""
    rows = cu_seqlens if cu_seqlens is not None else torch.arange(batch + 1, device=device) * seq_len
    idx = prepare_chunk_indices(rows, chunk_size).long()  # [NC, 2] (sequence, chunk within it)
    starts = rows.long()[idx[:, 0]] + idx[:, 1] * chunk_size
    return torch.cat([starts, starts.new_full((1,), batch * seq_len)])


def pad_chunks(x: torch.Tensor, chunk_size: int, cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [B, T, ...]`` -> ``([NC, chunk_size', ...], bounds)``: one row per chunk, zeros past a chunk's end
    (``chunk_size' <= chunk_size``, the longest chunk); :func:`unpad_chunks` with ``bounds`` inverts it."""
    B, T = x.shape[:2]
    bounds = _chunk_bounds(B, T, chunk_size, cu_seqlens, x.device)
    return pad_sequences(x.reshape(1, B * T, *x.shape[2:]), bounds), bounds


def unpad_chunks(x: torch.Tensor, bounds: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """Inverse of :func:`pad_chunks`: ``[NC, chunk_size', ...]`` -> ``[batch, seq_len, ...]``."""
    return unpad_sequences(x, bounds).reshape(batch, seq_len, *x.shape[2:])


def per_sequence(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    tokens: Sequence[torch.Tensor | None],
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn(*tokens_i, initial_state_i) -> (o_i, state_i)`` on every sequence of a packed row.

    Args:
        tokens: ``[1, T, ...]`` tensors cut along dim 1 (``None`` entries pass through).
        initial_state: ``[N, ...]`` or ``None``; sequence ``i`` gets ``initial_state[i:i+1]``.
    Returns:
        ``o`` ``[1, T, ...]`` (the outputs concatenated) and the states stacked to ``[N, ...]``.
    """
    outs, states = [], []
    bounds = cu_seqlens.tolist()
    for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        pieces = [None if t is None else t[:, bos:eos] for t in tokens]
        h0 = None if initial_state is None else initial_state[i : i + 1]
        o, state = fn(*pieces, h0)
        outs.append(o)
        states.append(state)
    return torch.cat(outs, 1), torch.cat(states, 0)


def _padded_rows(cu_seqlens: torch.Tensor, padding_side: str, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row, column)`` ``[T]`` of every packed token in a ``[N, width, ...]`` batch padded on ``padding_side``."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    _check_varlen(cu_seqlens)
    lens = prepare_lens(cu_seqlens)
    if lens.numel() and int(lens.max()) > width:
        raise ValueError(f"a sequence of cu_seqlens has {int(lens.max())} tokens, more than the padded width {width}")
    seq, pos = prepare_sequence_ids(cu_seqlens), prepare_position_ids(cu_seqlens)
    if padding_side == "left":  # sequence n sits in the last lens[n] columns
        pos = pos + (width - lens.long())[seq]
    return seq, pos


def pack_sequence(x: torch.Tensor, cu_seqlens: torch.Tensor, padding_side: str = "left") -> torch.Tensor:
    """Padded batch ``x [N, S, ...]`` -> packed ``[T, ...]`` (``T = cu_seqlens[-1]``), differentiable.

    Sequence ``n`` (``lens[n]`` tokens) is read from the last ``lens[n]`` columns of row ``n``
    (``padding_side="left"``) or the first ones (``"right"``).
    """
    if x.dim() < 2 or x.shape[0] != cu_seqlens.numel() - 1:
        raise ValueError(
            f"x has shape {list(x.shape)}, expected [N, S, ...] with N = {cu_seqlens.numel() - 1} (cu_seqlens' count)"
        )
    seq, pos = _padded_rows(cu_seqlens, padding_side, x.shape[1])
    return x[seq, pos]


def unpack_sequence(
    x: torch.Tensor,
    cu_seqlens: torch.Tensor,
    padding_side: str = "left",
    desired_shape: torch.Size | Sequence[int] | None = None,
) -> torch.Tensor:
    """Packed ``x [T, ...]`` -> padded batch ``[N, S, ...]`` with zeros at padding (inverse of :func:`pack_sequence`).

    ``S`` is ``desired_shape[1]`` when given (``desired_shape`` must be ``[N, S, *x.shape[1:]]``), else the longest
    sequence.
    """
    n = cu_seqlens.numel() - 1
    if x.dim() < 1:
        raise ValueError(f"x has shape {list(x.shape)}, expected [T, ...]")
    if desired_shape is None:
        _check_varlen(cu_seqlens)
        desired_shape = (n, int(prepare_lens(cu_seqlens).max()), *x.shape[1:])
    desired_shape = tuple(desired_shape)
    if len(desired_shape) < 2 or desired_shape[0] != n or desired_shape[2:] != tuple(x.shape[1:]):
        raise ValueError(
            f"desired_shape {list(desired_shape)} must be [N, S, ...] with N = {n}, trailing dims {list(x.shape[1:])}"
        )
    seq, pos = _padded_rows(cu_seqlens, padding_side, desired_shape[1])
    if x.shape[0] != seq.numel():
        raise ValueError(f"x has {x.shape[0]} tokens but cu_seqlens covers {seq.numel()}")
    return x.new_zeros(desired_shape).index_put((seq, pos), x)
