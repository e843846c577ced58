"""Padding masks -> varlen batches (unpad / repad) and rotary position offsets.

A padding mask is ``attention_mask [B, L]`` with 1 for real tokens and 0 for padding (left
padding for generation, any padding for training/prefill). Layers turn it into a packed
varlen batch once per forward: :func:`get_padding_info` is memoized on the mask tensor, so the
``nonzero`` / ``cumsum`` (and their host syncs) run once even though every layer asks.
Arbitrary attention masks (``[B, T, T]``, 4-D) are rejected by :func:`check_attention_mask`.

fla 0.6.0's (FlashAttention-style) names for the same job follow at the end: :func:`get_unpad_data`,
:func:`unpad_input` / :func:`pad_input`, :func:`index_first_axis` / :func:`index_put_first_axis`,
:func:`unpad_hidden_states` / :func:`repad_hidden_states`, the ``prepare_*`` mask helpers of
:mod:`fla.ops.utils.index`, and the per-layer cache accessors :func:`get_layer_cache` / :func:`update_layer_cache`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from fla.ops.utils.index import (
    check_mask,
    prepare_cu_seqlens_from_lens,
    prepare_cu_seqlens_from_mask,
    prepare_lens_from_mask,
)

# fla 0.6.0's GSA and HGRN2 layers normalize their output with its fused ``rms_norm_linear`` called without ``eps``,
# so with that function's default whatever ``norm_eps`` says (their ``g_norm.eps`` goes unused); ours use this eps so
# that their checkpoints give their logits (an output of small norm, as after short convolutions, is where it shows)
FLA060_FUSED_OUTPUT_NORM_EPS = 1e-5


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


# fla 0.6.0 / FlashAttention names -----------------------------------------------------------------------------


def _check_indices(indices: torch.Tensor) -> None:
    if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype.is_complex:
        raise ValueError(f"indices must be a 1-D integer tensor, got shape {list(indices.shape)} {indices.dtype}")


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x[indices]``: rows ``indices [N]`` of ``x [M, ...]`` -> ``[N, ...]`` (differentiable)."""
    _check_indices(indices)
    if x.dim() < 1:
        raise ValueError(f"x has shape {list(x.shape)}, expected [M, ...]")
    return x.index_select(0, indices)


def index_put_first_axis(x: torch.Tensor, indices: torch.Tensor, first_axis_dim: int) -> torch.Tensor:
    """Zeros ``[first_axis_dim, ...]`` with rows ``indices [N]`` set to ``x [N, ...]`` (differentiable)."""
    _check_indices(indices)
    if x.dim() < 1 or x.shape[0] != indices.numel():
        raise ValueError(f"x has shape {list(x.shape)}, expected [{indices.numel()}, ...] (one row per index)")
    return x.new_zeros(first_axis_dim, *x.shape[1:]).index_copy(0, indices.long(), x)


class IndexFirstAxis(torch.autograd.Function):
    """fla 0.6.0's autograd form of :func:`index_first_axis`: ``IndexFirstAxis.apply(x [M, ...], indices [N])``
    -> ``x[indices]``; the backward adds each row's gradient back at its index (repeated indices sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = index_first_axis(x, indices)
        ctx.save_for_backward(indices)
        ctx.first_axis_dim = x.shape[0]
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        (indices,) = ctx.saved_tensors
        dx = dout.new_zeros(ctx.first_axis_dim, *dout.shape[1:]).index_add_(0, indices.long(), dout)
        return dx, None


class IndexPutFirstAxis(torch.autograd.Function):
    """fla 0.6.0's autograd form of :func:`index_put_first_axis`: ``IndexPutFirstAxis.apply(x [N, ...], indices [N],
    first_axis_dim)`` -> zeros ``[first_axis_dim, ...]`` with rows ``indices`` set to ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, indices: torch.Tensor, first_axis_dim: int) -> torch.Tensor:
        out = index_put_first_axis(x, indices, first_axis_dim)
        ctx.save_for_backward(indices)
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        (indices,) = ctx.saved_tensors
        return dout.index_select(0, indices.long()), None, None


def get_unpad_data(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(indices [N] int64, cu_seqlens [B+1] int32, max_seqlen)`` of the real tokens of ``attention_mask [B, L]``
    (bool/int, 1 = token): flat indices ``b * L + t``, per-row cumulative counts, the longest row. Memoized."""
    check_mask(attention_mask, "attention_mask")
    info = get_padding_info(attention_mask)
    return info.indices, info.cu_seqlens, info.max_seqlen


def get_unpad_indices_and_cu(
    attention_mask: torch.Tensor, q_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, cu_seqlens)`` of :func:`get_unpad_data` for the last ``q_len`` columns of ``attention_mask``
    (all of them by default): the new tokens when the mask also covers cached ones."""
    check_mask(attention_mask, "attention_mask")
    if q_len is not None and not 1 <= q_len <= attention_mask.shape[1]:
        raise ValueError(f"q_len must be in [1, {attention_mask.shape[1]}] (the mask's length), got {q_len}")
    info = get_padding_info(attention_mask, q_len)
    return info.indices, info.cu_seqlens


def unpad_input(
    q: torch.Tensor | tuple[torch.Tensor, ...],
    states: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    q_len: int,
    keepdim: bool = False,
):
    """Unpad queries and key/value states with a padding mask, for varlen attention.

    Args:
        q: ``[B, q_len, ...]`` (or a tuple of such); states: tensors ``[B, S, ...]``.
        attention_mask: ``[B, S]`` bool/int, 1 = token. ``q_len`` is ``S`` (prefill: the queries share the mask)
            or 1 (decoding: one real new token per row, the last column).
        keepdim: add a leading batch dimension of 1 to the unpadded tensors.
    Returns:
        ``(q [N_q, ...], states (each [N_k, ...]), indices_q, (cu_seqlens_q, cu_seqlens_k),
        (max_seqlen_q, max_seqlen_k))``; ``q`` is a tuple when a tuple was given. With ``q_len == 1``,
        ``indices_q = arange(B)`` and ``cu_seqlens_q = arange(B + 1)``.
    """
    check_mask(attention_mask, "attention_mask")
    B, S = attention_mask.shape
    for s in states:
        if tuple(s.shape[:2]) != (B, S):
            raise ValueError(f"a state has shape {list(s.shape)}, expected [{B}, {S}, ...] (attention_mask's shape)")
    if q_len not in (S, 1):
        raise ValueError(f"q_len must be the mask's length {S} (prefill) or 1 (decoding), got {q_len}")
    qs = (q,) if isinstance(q, torch.Tensor) else tuple(q)
    for t in qs:
        if t.dim() < 2 or tuple(t.shape[:2]) != (B, q_len):
            raise ValueError(f"q has shape {list(t.shape)}, expected [{B}, {q_len}, ...]")
    info = get_padding_info(attention_mask)  # shapes checked above: unpad keeps the rows of the real tokens
    cu_seqlens_k, max_seqlen_k = info.cu_seqlens, info.max_seqlen
    states = tuple(unpad(s, info) for s in states)
    if q_len == S:
        qs = tuple(unpad(t, info) for t in qs)
        indices_q, cu_seqlens_q, max_seqlen_q = info.indices, cu_seqlens_k, max_seqlen_k
    else:  # decoding: every row's one query is a token
        cu_seqlens_q = torch.arange(B + 1, dtype=torch.int32, device=qs[0].device)
        indices_q, max_seqlen_q = cu_seqlens_q[:-1], 1
        qs = tuple(t.squeeze(1) for t in qs)
    if keepdim:
        qs = tuple(t.unsqueeze(0) for t in qs)
        states = tuple(s.unsqueeze(0) for s in states)
    q_out = qs[0] if isinstance(q, torch.Tensor) else qs
    return q_out, states, indices_q, (cu_seqlens_q, cu_seqlens_k), (max_seqlen_q, max_seqlen_k)


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    """Inverse of unpadding: ``hidden_states [N, ...]`` at flat positions ``indices [N]`` -> ``[batch_size, seq_len,
    ...]`` with zeros elsewhere (differentiable)."""
    out = index_put_first_axis(hidden_states, indices, batch_size * seq_len)
    return out.view(batch_size, seq_len, *hidden_states.shape[1:])


def unpad_hidden_states(
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    q_len: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(hidden_states [1, N, ...], indices, cu_seqlens)``: the real tokens of ``hidden_states [B, q_len, ...]``
    by the last ``q_len`` columns of ``attention_mask``; unchanged ``(hidden_states, None, cu_seqlens)`` when
    ``cu_seqlens`` is given (it takes precedence) or there is no mask."""
    if cu_seqlens is not None or attention_mask is None:
        return hidden_states, None, cu_seqlens
    if hidden_states.dim() < 2 or hidden_states.shape[:2] != (attention_mask.shape[0], q_len):
        raise ValueError(
            f"hidden_states has shape {list(hidden_states.shape)}, expected [{attention_mask.shape[0]}, {q_len}, ...]"
        )
    indices, cu_seqlens = get_unpad_indices_and_cu(attention_mask, q_len)
    return index_first_axis(hidden_states.flatten(0, 1), indices)[None], indices, cu_seqlens


def repad_hidden_states(
    hidden_states: torch.Tensor, indices: torch.Tensor | None, batch_size: int, q_len: int
) -> torch.Tensor:
    """Inverse of :func:`unpad_hidden_states`: ``[1, N, ...]`` -> ``[batch_size, q_len, ...]``; unchanged when
    ``indices`` is ``None``."""
    if indices is None:
        return hidden_states
    if hidden_states.dim() < 2 or hidden_states.shape[0] != 1:
        raise ValueError(f"hidden_states has shape {list(hidden_states.shape)}, expected [1, N, ...]")
    return pad_input(hidden_states[0], indices, batch_size, q_len)


def require_cache_layer_idx(module: torch.nn.Module, past_key_values: object | None) -> int | None:
    """``module.layer_idx``; ``ValueError`` naming the module's class when a cache is given without one."""
    layer_idx = getattr(module, "layer_idx", None)
    if past_key_values is not None and layer_idx is None:
        raise ValueError(f"{type(module).__name__}: layer_idx is required when past_key_values is given")
    return layer_idx


def get_layer_cache(module: torch.nn.Module, past_key_values: object | None) -> dict | None:
    """The state dict ``module`` stored in ``past_key_values`` (an :class:`~fla.models.cache.FLACache`), or ``None``
    when there is no cache or the layer has stored nothing yet."""
    layer_idx = require_cache_layer_idx(module, past_key_values)
    if past_key_values is None or layer_idx >= len(past_key_values):
        return None
    try:
        return past_key_values[layer_idx]
    except KeyError:  # FLACache: a layer slot created for a later layer's update, with no state yet
        return None


def update_layer_cache(module: torch.nn.Module, past_key_values: object | None, **kwargs) -> dict | None:
    """``past_key_values.update(layer_idx=module.layer_idx, **kwargs)`` (the slots ``recurrent_state``,
    ``attn_state``, ``conv_state``, ``ffn_state``, ``offset``, ``cache_kwargs``); ``None`` without a cache."""
    layer_idx = require_cache_layer_idx(module, past_key_values)
    if past_key_values is None:
        return None
    return past_key_values.update(layer_idx=layer_idx, **kwargs)


__all__ = [
    "PaddingInfo",
    "check_attention_mask",
    "decode_offsets",
    "get_layer_cache",
    "get_padding_info",
    "get_unpad_data",
    "get_unpad_indices_and_cu",
    "has_padding",
    "IndexFirstAxis",
    "IndexPutFirstAxis",
    "index_first_axis",
    "index_put_first_axis",
    "offsets_from_position_ids",
    "pad_input",
    "prepare_cu_seqlens_from_lens",
    "prepare_cu_seqlens_from_mask",
    "prepare_lens_from_mask",
    "repad",
    "repad_hidden_states",
    "require_cache_layer_idx",
    "unpad",
    "unpad_hidden_states",
    "unpad_input",
    "update_layer_cache",
]
