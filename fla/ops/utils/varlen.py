"""Packed varlen rows <-> padded batches, and a per-sequence loop for references.

A packed row is ``[1, T, ...]`` with ``cu_seqlens [N+1]``; the padded batch is ``[N, T_max, ...]``
with zeros after each sequence's end. Both directions are plain indexing, so autograd flows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fla.ops.utils.index import prepare_lens, prepare_position_ids, prepare_sequence_ids


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
