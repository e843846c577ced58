"""Padding masks -> varlen batches (unpad / repad) and rotary position offsets.

A padding mask is ``attention_mask [B, L]`` with 1 for real tokens and 0 for padding (left
padding for generation, any padding for training/prefill). Layers turn it into a packed
varlen batch once per forward: :func:`get_padding_info` is memoized on the mask tensor, so the
``nonzero`` / ``cumsum`` (and their host syncs) run once even though every layer asks.
Arbitrary attention masks (``[B, T, T]``, 4-D) are rejected by :func:`check_attention_mask`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch


class PaddingInfo(NamedTuple):
    """A padded ``[B, T]`` batch seen as a packed varlen batch of ``N`` real tokens.

    Attributes:
        indices: ``[N]`` int64 flat indices ``b * T + t`` of the real tokens, in order.
        cu_seqlens: ``[B+1]`` int32 cumulative real-token counts (rows of only padding give length 0).
        max_seqlen: longest row, in real tokens.
        batch_size: ``B``.
        seq_len: ``T``.
    """

    indices: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    batch_size: int
    seq_len: int


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return type(a) is type(b) and a == b


def _memo_last(fn: Callable) -> Callable:
    """Remember the last call: same tensor objects (identity) and equal other arguments -> cached result.

    The last arguments are kept alive, so their ids cannot be reused by new tensors. Mutating a
    mask in place between calls is not detected (masks are not mutated by the models).
    """
    last: list = [None, None]

    @functools.wraps(fn)
    def wrapper(*args):
        key = last[0]
        if key is not None and len(key) == len(args) and all(_same(a, b) for a, b in zip(key, args)):
            return last[1]
        result = fn(*args)
        last[0], last[1] = args, result
        return result

    return wrapper


def begin_layer_call(
    layer: torch.nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    past_key_values: object | None,
    cu_seqlens: torch.Tensor | None,
    output_attentions: bool = False,
) -> tuple[int, torch.Tensor | None]:
    """The checks every token mixer's ``forward`` starts with, before any projection; errors name the layer's class.

    ``hidden_states`` is ``[B, T, layer.hidden_size]``; a cache needs ``layer.layer_idx``; ``output_attentions``
    (never supported: no attention weights are materialized) warns; ``attention_mask`` is a ``[B, cached + T]``
    0/1 padding mask (any length with ``cu_seqlens``); ``cu_seqlens`` comes with a packed batch of size 1, as a
    1-D ``[S+1]`` tensor, and an empty cache.

    Returns:
        ``(cached, attention_mask)``: the tokens already in this layer's cache, and the mask when it still
        matters (``None`` with ``cu_seqlens`` or without padding).
    """
    name = type(layer).__name__
    if output_attentions:
        warnings.warn(f"{name} does not return attention weights; output_attentions is ignored", stacklevel=3)
    if hidden_states.dim() != 3 or hidden_states.shape[-1] != layer.hidden_size:
        raise ValueError(
            f"{name}: hidden_states has shape {list(hidden_states.shape)}, expected [B, T, {layer.hidden_size}]"
        )
    if past_key_values is not None and layer.layer_idx is None:
        raise ValueError(f"{name}: layer_idx is required when past_key_values is given")
    B, T, _ = hidden_states.shape
    cached = past_key_values.get_seq_length(layer.layer_idx) if past_key_values is not None else 0
    if attention_mask is not None:
        check_attention_mask(attention_mask, B, None if cu_seqlens is not None else cached + T)
        if cu_seqlens is not None or not has_padding(attention_mask):
            attention_mask = None
    if cu_seqlens is not None:
        if B != 1 or cu_seqlens.dim() != 1:
            raise ValueError(
                f"{name}: cu_seqlens (shape {list(cu_seqlens.shape)}) needs a packed batch of size 1 and a "
                f"1-D [S+1] tensor; hidden_states has batch size {B}"
            )
        if cached > 0:
            raise ValueError(f"{name}: cu_seqlens cannot be combined with a non-empty cache (prefill only)")
    return cached, attention_mask


def check_attention_mask(attention_mask: torch.Tensor, batch_size: int, length: int | None = None) -> None:
    """Raise ``ValueError`` unless ``attention_mask`` is a ``[batch_size, length]`` 0/1 padding mask.

    Args:
        attention_mask: the mask to check; ``length`` is the total length it must cover
            (cached tokens + new tokens), ``None`` accepts any length.
    """
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask has shape {list(attention_mask.shape)}: only [batch_size, seq_len] padding masks "
            "(1 = token, 0 = padding) are supported; arbitrary [B, T, T] or 4-D attention masks are not"
        )
    if attention_mask.shape[0] != batch_size or (length is not None and attention_mask.shape[1] != length):
        want = f"[{batch_size}, {length if length is not None else '*'}]"
        raise ValueError(
            f"attention_mask has shape {list(attention_mask.shape)}, expected {want} "
            "[batch_size, cached tokens + new tokens]"
        )
    if attention_mask.is_floating_point() and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError(
            "attention_mask must hold only 0 (padding) and 1 (token); additive float masks are not supported"
        )


@_memo_last
def has_padding(attention_mask: torch.Tensor) -> bool:
    """True when ``attention_mask [B, L]`` has at least one 0 (one host sync, memoized)."""
    return not bool(attention_mask.bool().all())


@_memo_last
def _padding_info(attention_mask: torch.Tensor, seq_len: int) -> PaddingInfo:
    mask = attention_mask[:, -seq_len:].bool()
    lens = mask.sum(-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))
    return PaddingInfo(indices, cu_seqlens, int(lens.max()), mask.shape[0], seq_len)


def get_padding_info(attention_mask: torch.Tensor, seq_len: int | None = None) -> PaddingInfo:
    """Varlen description of the last ``seq_len`` columns of ``attention_mask [B, L]`` (default: all).

    The last ``seq_len`` columns are the mask of the new tokens when ``L`` also covers cached ones.
    Memoized: every layer of one forward gets the same object.
    """
    return _padding_info(attention_mask, attention_mask.shape[1] if seq_len is None else seq_len)


def unpad(x: torch.Tensor, info: PaddingInfo) -> torch.Tensor:
    """Keep the real tokens: ``x [B, T, ...]`` -> ``[N, ...]`` (differentiable)."""
    if tuple(x.shape[:2]) != (info.batch_size, info.seq_len):
        raise ValueError(
            f"unpad: x has shape {list(x.shape)}, expected [{info.batch_size}, {info.seq_len}, ...] (the mask's batch)"
        )
    return x.flatten(0, 1).index_select(0, info.indices)


def repad(x: torch.Tensor, info: PaddingInfo) -> torch.Tensor:
    """Inverse of :func:`unpad`: ``x [N, ...]`` -> ``[B, T, ...]`` with zeros at padding (differentiable)."""
    if x.shape[0] != info.indices.numel():
        raise ValueError(f"repad: x has {x.shape[0]} rows but the mask has {info.indices.numel()} real tokens")
    out = x.new_zeros(info.batch_size * info.seq_len, *x.shape[1:])
    return out.index_copy(0, info.indices, x).view(info.batch_size, info.seq_len, *x.shape[1:])


@_memo_last
def _decode_offsets(attention_mask: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, int]:
    if not bool(attention_mask[:, -seq_len:].bool().all()):
        raise ValueError(
            "with a non-empty cache the new tokens must not be padding "
            f"(use left padding for generation; attention_mask[:, -{seq_len}:] must be all 1)"
        )
    offsets = attention_mask[:, :-seq_len].sum(-1).long()
    return offsets, int(offsets.max())


def decode_offsets(attention_mask: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, int]:
    """Rotary offsets of ``seq_len`` new (real) tokens after a left-padded cache.

    Args:
        attention_mask: ``[B, L]`` covering the cached tokens and the ``seq_len`` new ones.
    Returns:
        ``(offsets [B] int64, max offset)``: the number of real cached tokens per row. Raises
        ``ValueError`` when a new token is padding. Memoized (one host sync per forward).
    """
    return _decode_offsets(attention_mask, seq_len)


@_memo_last
def _offsets_from_position_ids(position_ids: torch.Tensor, batch_size: int, seq_len: int) -> int | torch.Tensor:
    if position_ids.dim() == 1:
        position_ids = position_ids[None]
    if position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch_size) or position_ids.shape[1] != seq_len:
        raise ValueError(
            f"position_ids has shape {list(position_ids.shape)}, expected [{batch_size}, {seq_len}] or [1, {seq_len}]"
        )
    starts = position_ids[:, :1]
    steps = torch.arange(seq_len, device=position_ids.device)
    if not bool((position_ids == starts + steps).all()):
        raise ValueError(
            "position_ids must be consecutive within each row (start + 0, 1, 2, ...); for packed sequences whose "
            "positions restart, pass cu_seqlens instead (position_ids are then ignored)"
        )
    if bool((starts < 0).any()):
        raise ValueError("position_ids must be non-negative")
    if bool((starts == starts[0]).all()):
        return int(starts[0, 0])
    return starts[:, 0].long().expand(batch_size).contiguous()


def offsets_from_position_ids(position_ids: torch.Tensor, batch_size: int, seq_len: int) -> int | torch.Tensor:
    """Rotary ``seqlen_offset`` for ``position_ids [B or 1, T]`` whose rows are consecutive ranges.

    Returns:
        an ``int`` when every row starts at the same position, else a ``[B]`` int64 tensor of row
        starts. Rows that are not ``start + arange(T)`` raise ``ValueError`` (use ``cu_seqlens``).
    """
    return _offsets_from_position_ids(position_ids, batch_size, seq_len)


__all__ = [
    "PaddingInfo",
    "check_attention_mask",
    "decode_offsets",
    "get_padding_info",
    "has_padding",
    "offsets_from_position_ids",
    "repad",
    "unpad",
]
