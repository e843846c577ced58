"""Softmax attention layer (GQA, RoPE, optional qk-norm and sliding window), parameter-compatible with fla.

Parameters: ``q_proj``, ``k_proj``, ``v_proj`` (bias when ``qkv_bias``), ``o_proj`` and, with
``qk_norm``, ``q_norm`` / ``k_norm`` (RMSNorm over the head dim). The attention itself runs in
:mod:`fla.layers.attention_backends` (flash-attn when installed, else torch ``varlen_attn`` or SDPA),
so the layer always builds and runs, on CPU too.

Inputs and positions (what decides the rotary position of a token):

* ``cu_seqlens [S+1]`` (packed batch, ``B == 1``): positions restart at 0 for every sequence;
  ``position_ids`` are ignored. The cache must be empty.
* ``attention_mask [B, L]`` with padding (``L`` = cached + new tokens): positions count the real
  tokens before each token, so left- and right-padded rows match their unpadded forward;
  ``position_ids`` are ignored. Without a cache the batch is unpadded to varlen once (indices
  memoized per mask) and repadded after (outputs at padding are 0); with a non-empty cache the
  new tokens must all be real (left padding) and padded cached keys are masked out.
* otherwise ``position_ids [B or 1, T]`` when given (each row consecutive: ``start + 0, 1, ...``;
  rows may start at different positions), else the cache length.

Context parallel (``cp_context``, a :class:`fla.context_parallel.CPContext`: this rank holds one slice of sequences
split along time): positions go on from the earlier ranks; every rank's keys and values are gathered (after RoPE),
and the first local piece (the one a document may continue from earlier ranks) attends its document's keys on the
earlier ranks too, the other pieces their own. Training only (no cache, no padding mask). The gather holds every
rank's keys and values: ``O(T)`` memory per rank, against ring attention's ``O(T / R)``.

Cache (:class:`fla.models.cache.FLACache`): ``attn_state = (k, v)``, each ``[B, L, Hkv, D]`` after
RoPE; with ``window_size`` only the last ``window_size`` positions are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from fla.context_parallel import CPContext, earlier_tokens
from fla.layers.attention_backends import attention_dense, attention_varlen
from fla.layers.utils import (
    begin_layer_call,
    decode_offsets,
    get_padding_info,
    offsets_from_position_ids,
    repad,
    unpad,
)
from fla.modules.norm import RMSNorm
from fla.modules.rotary import RotaryEmbedding

if TYPE_CHECKING:
    from fla.models.cache import FLACache


class Attention(nn.Module):
    """Multi-head causal attention with grouped key/value heads.

    Args:
        hidden_size: model width; the head dim is ``hidden_size // num_heads``.
        num_heads: query heads.
        num_kv_heads: key/value heads (default ``num_heads``); must divide ``num_heads``.
        qkv_bias: biases on the q/k/v projections.
        qk_norm: RMSNorm over the head dim of q and k (before RoPE).
        window_size: sliding window in tokens (``None``: full causal attention).
        rope_theta: RoPE base; ``None`` disables RoPE.
        max_position_embeddings: size the RoPE tables are built for up front (they grow on demand).
        layer_idx: index of this layer in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    """Runs under ``cp_context`` (module docstring)."""

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 32,
        num_kv_heads: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        window_size: int | None = None,
        rope_theta: float | None = 10000.0,
        max_position_embeddings: int | None = None,
        layer_idx: int | None = None,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if hidden_size % num_heads != 0:
            raise ValueError(f"Attention: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"Attention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        if window_size is not None and (isinstance(window_size, bool) or window_size <= 0):
            raise ValueError(f"Attention: window_size must be a positive integer or None, got {window_size!r}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.window_size = window_size
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, dtype=torch.float32)
            self.k_norm = RMSNorm(self.head_dim, dtype=torch.float32)
        self.rotary = RotaryEmbedding(dim=self.head_dim, base=rope_theta) if rope_theta is not None else None

    def extra_repr(self) -> str:
        text = f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"
        if self.window_size is not None:
            text += f", window_size={self.window_size}"
        return text

    def _rope(self, q, k, seqlen_offset=0, max_seqlen: int = 0, cu_seqlens=None):
        if self.rotary is None:
            return q, k
        max_seqlen = max(max_seqlen, self.max_position_embeddings or 0)
        return self.rotary(q, k, seqlen_offset=seqlen_offset, max_seqlen=max_seqlen, cu_seqlens=cu_seqlens)

    def _cached_kv(self, cache: FLACache, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new ``k, v [B, T, Hkv, D]``; return every key/value the new queries may attend."""
        previous = cache[self.layer_idx]["attn_state"] if cache.get_seq_length(self.layer_idx) > 0 else None
        state = cache.update(
            attn_state=(k, v),
            layer_idx=self.layer_idx,
            offset=k.shape[1],
            cache_kwargs={"window_size": self.window_size},
        )
        if previous is None:
            return k, v
        if self.window_size is None or k.shape[1] == 1:
            return state["attn_state"]  # the stored keys are exactly the visible ones
        # a window cache dropped keys the first new queries still see: rebuild from the previous state
        return torch.cat([previous[0], k], 1), torch.cat([previous[1], v], 1)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        output_attentions: bool = False,
        use_cache: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None]:
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values)``.

        Args:
            attention_mask: ``[B, cached + T]`` padding mask (1 = token, 0 = padding) or None.
            past_key_values: the cache to read and extend (or None); needs ``layer_idx``.
            output_attentions: not supported (attention weights are never materialized): warns.
            use_cache: accepted for API compatibility; the cache is used whenever it is given.
            cu_seqlens: ``[S+1]`` packed-sequence boundaries (``B == 1``).
            position_ids: ``[B or 1, T]`` consecutive positions per row (see the module docstring).
        """
        cached, attention_mask = begin_layer_call(
            self, hidden_states, attention_mask, past_key_values, cu_seqlens, output_attentions
        )
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cp = kwargs.get("cp_context")
        if cp is not None:
            cp.check_call("Attention", past_key_values is not None, attention_mask is not None, cu_seqlens)
            o = self._forward_context_parallel(q, k, v, cp, cu_seqlens)
        elif cu_seqlens is not None:
            o = self._forward_varlen(q, k, v, cu_seqlens, past_key_values)
        elif attention_mask is not None:
            if cached == 0:
                o = self._forward_unpadded(q, k, v, attention_mask, past_key_values)
            else:
                o = self._forward_padded_decode(q, k, v, attention_mask, past_key_values)
        else:
            offset = cached if position_ids is None else offsets_from_position_ids(position_ids, B, T)
            top = offset if isinstance(offset, int) else int(offset.max())
            q, k = self._rope(q, k, seqlen_offset=offset, max_seqlen=top + T)
            if past_key_values is not None:
                k, v = self._cached_kv(past_key_values, k, v)
            o = attention_dense(q, k, v, window_size=self.window_size)
        return self.o_proj(o.reshape(B, T, -1)), None, past_key_values

    def _forward_varlen(self, q, k, v, cu_seqlens, cache) -> torch.Tensor:
        # the packed length bounds every sequence: no host sync to find the longest one
        max_seqlen = q.shape[1]
        q, k = self._rope(q, k, max_seqlen=max_seqlen, cu_seqlens=cu_seqlens)
        if cache is not None:
            self._cached_kv(cache, k, v)
        return attention_varlen(q[0], k[0], v[0], cu_seqlens, max_seqlen, self.window_size)[None]

    def _forward_context_parallel(self, q, k, v, cp: CPContext, cu_seqlens) -> torch.Tensor:
        """This rank's slice ``q, k, v [B, T, H(kv), D]`` of sequences split over ``cp`` (module docstring)."""
        T, carried, n = q.shape[1], cp.carried[cp.rank], cp.first_len
        q, k = self._rope(q, k, seqlen_offset=cp.position_offsets(), max_seqlen=carried + T, cu_seqlens=cu_seqlens)
        ek, ev = earlier_tokens(torch.stack([k, v], 2), cp).unbind(2)  # the first piece's document, earlier ranks
        k_first, v_first = torch.cat([ek, k[:, :n]], 1), torch.cat([ev, v[:, :n]], 1)
        o = attention_dense(q[:, :n], k_first, v_first, window_size=self.window_size)
        return cp.with_other_pieces(
            o, lambda: attention_varlen(q[0], k[0], v[0], cu_seqlens, T, self.window_size)[None]
        )

    def _forward_unpadded(self, q, k, v, attention_mask, cache) -> torch.Tensor:
        """Padded prefill: run the real tokens as a varlen batch, cache k/v in the padded layout."""
        info = get_padding_info(attention_mask)
        q_u, k_u, v_u = unpad(q, info)[None], unpad(k, info)[None], unpad(v, info)[None]
        q_u, k_u = self._rope(q_u, k_u, max_seqlen=info.max_seqlen, cu_seqlens=info.cu_seqlens)
        if cache is not None:
            self._cached_kv(cache, repad(k_u[0], info), repad(v_u[0], info))
        o = attention_varlen(q_u[0], k_u[0], v_u[0], info.cu_seqlens, info.max_seqlen, self.window_size)
        return repad(o, info)

    def _forward_padded_decode(self, q, k, v, attention_mask, cache) -> torch.Tensor:
        """New (real) tokens after a cache whose rows hold left padding."""
        T = q.shape[1]
        offsets, top = decode_offsets(attention_mask, T)  # real cached tokens per row
        q, k = self._rope(q, k, seqlen_offset=offsets, max_seqlen=top + T)
        k, v = self._cached_kv(cache, k, v)
        key_mask = attention_mask[:, -k.shape[1] :].bool()
        return attention_dense(q, k, v, key_mask=key_mask, window_size=self.window_size)


__all__ = ["Attention"]
