"""FLACache: the per-layer state of fla models during generation (a transformers 5 ``Cache``).

Each layer owns a state dict with four slots, filled by whichever mixer the layer has::

    recurrent_state  linear-attention state, e.g. [B, H, K, V] float32 (or a tuple of tensors)
    attn_state       (k, v) of softmax attention, each [B, L, Hkv, D] (forgetting attention adds its
                     log forget gates [B, L, H] as a third entry); with a sliding window only the
                     last window_size positions are kept
    conv_state       short-convolution state(s), e.g. [B, D, W] (or a tuple)
    ffn_state        state of a stateful feed-forward block (rare)

``update(...)`` overwrites the given slots (``attn_state`` is appended to) and advances the
layer's token counter by ``offset`` (the number of new tokens). ``get_seq_length(i)`` is the
number of tokens layer ``i`` has seen, padding included. Every tensor in the cache has the batch
on dim 0, so ``reorder_cache`` / ``batch_select_indices`` / ``batch_repeat_interleave`` (beam
search, contrastive search, ...) work on all slots alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

_SLOTS = ("recurrent_state", "attn_state", "conv_state", "ffn_state")


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor in a (nested) tuple / list / dict of states."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(item, fn) for item in value)
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    raise TypeError(f"FLACache cannot transform a state of type {type(value).__name__}")


def _append_window(old: torch.Tensor | None, new: torch.Tensor, window_size: int | None) -> torch.Tensor:
    """``cat(old, new)`` along dim 1, keeping only the last ``window_size`` positions when windowed."""
    out = new if old is None else torch.cat([old, new], 1)
    if window_size is not None and out.shape[1] > window_size:
        out = out[:, -window_size:].contiguous()
    return out


class FLALayer(CacheLayerMixin):
    """The cache of one layer: a dict of :data:`_SLOTS` plus a token counter."""

    is_compileable = False
    supports_early_init = False

    def __init__(self, **kwargs):
        super().__init__()
        self.state: dict[str, Any] | None = None
        self.seen_tokens = 0
        self.window_size: int | None = None

    @property
    def is_sliding(self) -> bool:
        return self.window_size is not None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor | None = None) -> None:
        self.device = key_states.device

    def update(
        self,
        recurrent_state: Any = None,
        attn_state: tuple[torch.Tensor, torch.Tensor] | None = None,
        conv_state: Any = None,
        ffn_state: Any = None,
        offset: int = 1,
        window_size: int | None = None,
    ) -> dict[str, Any]:
        """Write the given slots, append ``attn_state`` and count ``offset`` new tokens; return the state dict."""
        if self.state is None:
            self.state = dict.fromkeys(_SLOTS)
        if recurrent_state is not None:
            self.state["recurrent_state"] = recurrent_state
        if attn_state is not None:
            if not isinstance(attn_state, (tuple, list)) or len(attn_state) not in (2, 3):
                raise ValueError(
                    "FLACache: attn_state must be a (k, v) pair of [B, T, Hkv, D] tensors (or (k, v, g) with the "
                    "log gates g [B, T, H])"
                )
            self.window_size = window_size
            old = self.state["attn_state"] or (None,) * len(attn_state)
            self.state["attn_state"] = tuple(_append_window(o, n, window_size) for o, n in zip(old, attn_state))
        if conv_state is not None:
            self.state["conv_state"] = conv_state
        if ffn_state is not None:
            self.state["ffn_state"] = ffn_state
        self.seen_tokens += offset
        self.is_initialized = True
        first = next((t for t in _flat_tensors(self.state)), None)
        if first is not None:
            self.device = first.device
        return self.state

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_max_length(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``(kv_length, kv_offset)`` of the keys the next ``query_length`` queries see."""
        kept = self.seen_tokens if self.window_size is None else min(self.seen_tokens, self.window_size - 1)
        return kept + query_length, self.seen_tokens - kept

    def _transform(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.state is not None:
            self.state = _map_tensors(self.state, fn)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._transform(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._transform(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._transform(lambda t: t.repeat_interleave(repeats, dim=0))

    def crop(self, max_length: int) -> None:
        """Keep the first ``max_length`` tokens (negative: drop ``-max_length``); attention-only, unwindowed."""
        if max_length < 0:
            max_length = max(self.seen_tokens + max_length, 0)
        if max_length >= self.seen_tokens:
            return
        if self.state is not None and any(self.state[s] is not None for s in ("recurrent_state", "conv_state")):
            raise NotImplementedError("FLACache: recurrent / convolution states cannot be rolled back (crop)")
        if self.window_size is not None:
            raise NotImplementedError("FLACache: a sliding-window cache cannot be rolled back (crop)")
        if self.state is not None and self.state["attn_state"] is not None:
            self.state["attn_state"] = tuple(t[:, :max_length] for t in self.state["attn_state"])
        self.seen_tokens = max_length

    def offload(self) -> None:
        self._transform(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        if getattr(self, "device", None) is not None:
            self._transform(lambda t: t.to(self.device, non_blocking=True))

    def reset(self) -> None:
        self.state = None
        self.seen_tokens = 0
        self.is_initialized = False


def _flat_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flat_tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _flat_tensors(item)


class FLACache(Cache):
    """Cache of an fla model: one :class:`FLALayer` per layer index, created on first update.

    ``cache[i]`` is layer ``i``'s state dict; ``cache.update(..., layer_idx=i)`` writes it.
    """

    is_compileable = False

    def __init__(self, **kwargs):
        if kwargs.pop("offloading", False):
            raise NotImplementedError("FLACache does not support offloading")
        kwargs.pop("config", None)
        super().__init__(layer_class_to_replicate=FLALayer, **kwargs)

    def update(
        self,
        recurrent_state: Any = None,
        attn_state: tuple[torch.Tensor, torch.Tensor] | None = None,
        conv_state: Any = None,
        ffn_state: Any = None,
        layer_idx: int = 0,
        offset: int | None = 1,
        cache_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Update layer ``layer_idx`` (see :meth:`FLALayer.update`); ``cache_kwargs`` may hold ``window_size``."""
        while len(self.layers) <= layer_idx:
            self.layers.append(FLALayer())
        window_size = (cache_kwargs or {}).get("window_size")
        return self.layers[layer_idx].update(
            recurrent_state=recurrent_state,
            attn_state=attn_state,
            conv_state=conv_state,
            ffn_state=ffn_state,
            offset=1 if offset is None else offset,
            window_size=window_size,
        )

    def __getitem__(self, layer_idx: int) -> dict[str, Any]:
        if layer_idx >= len(self.layers) or self.layers[layer_idx].state is None:
            raise KeyError(f"FLACache has no state for layer {layer_idx} (it holds {len(self.layers)} layers)")
        return self.layers[layer_idx].state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for layer in self.layers:
            yield layer.state

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        """Tokens seen by layer ``layer_idx`` (0 when it has no state yet)."""
        layer_idx = layer_idx or 0
        return self.layers[layer_idx].get_seq_length() if layer_idx < len(self.layers) else 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        if layer_idx >= len(self.layers):
            return query_length, 0
        return self.layers[layer_idx].get_mask_sizes(query_length)

    def crop(self, max_length: int) -> None:
        for layer in self.layers:
            layer.crop(max_length)

    def to_legacy_cache(self) -> tuple[dict[str, Any], ...]:
        """The per-layer state dicts (fla's legacy format)."""
        return tuple(layer.state for layer in self.layers)

    @classmethod
    def from_legacy_cache(cls, past_key_values=None, seen_tokens: int = 0) -> FLACache:
        """Build a cache from fla's legacy format: a sequence of per-layer state dicts (or ``None``)."""
        if isinstance(past_key_values, cls):
            return past_key_values
        cache = cls()
        for state in past_key_values or ():
            layer = FLALayer()
            if state is not None:
                unknown = set(state) - set(_SLOTS)
                if unknown:
                    raise ValueError(f"FLACache.from_legacy_cache: unknown state keys {sorted(unknown)}")
                layer.state = {slot: state.get(slot) for slot in _SLOTS}
                layer.is_initialized = True
            layer.seen_tokens = int(seen_tokens)
            cache.layers.append(layer)
        return cache


__all__ = ["FLACache", "FLALayer"]
