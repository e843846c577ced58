"""Forgetting attention (FoX, Lin et al. 2025), parameter-compatible with fla 0.6.0's ``ForgettingAttention``.

Softmax attention without positional embeddings whose scores decay with a data-dependent forget gate:
``s_ij = q_i . k_j / sqrt(D) + sum_{j < m <= i} log f_m`` with ``log f_t = logsigmoid(f_proj(x_t))`` per query
head (:func:`fla.ops.forgetting_attn.parallel_forgetting_attn`).

Parameters: ``q_proj``, ``k_proj``, ``v_proj`` (bias when ``qkv_bias``), ``f_proj`` (with bias), ``g_proj``
(``use_output_gate``: ``o *= sigmoid(g_proj(x))``), ``o_proj`` and, with ``qk_norm``, ``q_norm`` / ``k_norm``
(per-head RMS norms over the flat projections, fla's ``GroupNorm``).

Inputs: ``cu_seqlens [S+1]`` (packed, ``B == 1``, empty cache), a padding mask ``attention_mask [B, cached + T]``
(a padded prefill runs the real tokens as a packed batch; with a cache the new tokens must be real: left
padding), or neither. No rotary positions: ``position_ids`` are ignored.

Cache (:class:`fla.models.cache.FLACache`): ``attn_state = (k, v, log f)`` ``[B, L, Hkv, D]``, ``[B, L, Hkv, D]``,
``[B, L, H]``; with ``window_size`` only the last ``window_size`` positions are kept. New tokens after a
non-empty cache run :func:`fla.ops.attn.attn_decoding_one_step`, one token at a time.

Context parallel (``cp_context``, a :class:`fla.context_parallel.CPContext`): every rank's keys, values and log
forget gates are gathered; the first local piece (the one a document may continue from earlier ranks) runs over its
document's earlier tokens as well, with zero queries there (their outputs are dropped): ``O((carried + T)^2)`` on
a rank whose document began ``carried`` tokens before it. The other pieces run on their own. Training only.

``window_size`` bounds every path here (training, prefill and decode attend to the last ``window_size`` keys).
fla 0.6.0's layer hands it to its cache only: its training and prefill attend to the whole prefix while its decode
sees the window. A fla 0.6.0 checkpoint with a ``window_size`` therefore gives fla 0.6.0's logits here up to
``window_size`` tokens; without one (its default), at every length (tests/fla/models/test_fla060_family_compat.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import CPContext, earlier_tokens
from fla.layers.utils import (
    begin_layer_call,
    decode_offsets,
    get_padding_info,
    repad,
    unpad,
)
from fla.modules.norm import GroupNorm
from fla.ops.attn import attn_decoding_one_step
from fla.ops.forgetting_attn import parallel_forgetting_attn

if TYPE_CHECKING:
    from fla.models.cache import FLACache


class ForgettingAttention(nn.Module):
    """Causal softmax attention with a per-head forget gate (FoX), grouped key/value heads.

    Args:
        hidden_size: model width; the head dim is ``hidden_size // num_heads``.
        num_heads: query heads (and forget-gate heads).
        num_kv_heads: key/value heads (default ``num_heads``); must divide ``num_heads``.
        qkv_bias: biases on the q/k/v projections.
        qk_norm: per-head RMS norm of q and k.
        window_size: sliding window in tokens (``None``: full causal attention).
        use_output_gate: ``o = sigmoid(g_proj(x)) * o`` before ``o_proj``.
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
        use_output_gate: bool = False,
        layer_idx: int | None = None,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"ForgettingAttention: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}"
            )
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"ForgettingAttention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}"
            )
        if window_size is not None and (isinstance(window_size, bool) or window_size <= 0):
            raise ValueError(
                f"ForgettingAttention: window_size must be a positive integer or None, got {window_size!r}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.window_size = window_size
        self.use_output_gate = use_output_gate
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.f_proj = nn.Linear(hidden_size, num_heads, bias=True)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if qk_norm:
            self.q_norm = GroupNorm(num_heads, hidden_size, is_rms_norm=True)
            self.k_norm = GroupNorm(num_kv_heads, self.kv_dim, is_rms_norm=True)

    def extra_repr(self) -> str:
        text = f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"
        if self.window_size is not None:
            text += f", window_size={self.window_size}"
        return text

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        output_attentions: bool = False,
        use_cache: bool = False,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None]:
        """``hidden_states [B, T, hidden_size]`` -> ``(o [B, T, hidden_size], None, past_key_values)``.

        Args:
            attention_mask: ``[B, cached + T]`` padding mask (1 = token, 0 = padding) or None.
            past_key_values: the cache to read and extend (or None); needs ``layer_idx``.
            output_attentions: not supported (warns).
            use_cache: accepted for API compatibility; the cache is used whenever it is given.
            cu_seqlens: ``[S+1]`` packed-sequence boundaries (``B == 1``, empty cache).
        """
        cached, attention_mask = begin_layer_call(
            self, hidden_states, attention_mask, past_key_values, cu_seqlens, output_attentions
        )
        B, T, _ = hidden_states.shape
        q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
        f = F.logsigmoid(self.f_proj(hidden_states).float())  # [B, T, H] log forget gates
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        cp = kwargs.get("cp_context")
        if cp is not None:
            cp.check_call("ForgettingAttention", past_key_values is not None, attention_mask is not None, cu_seqlens)
            o = self._forward_context_parallel(q, k, v, f, cp, cu_seqlens)
        elif cu_seqlens is not None:
            self._store(past_key_values, k, v, f)
            o = parallel_forgetting_attn(q, k, v, f, window_size=self.window_size, cu_seqlens=cu_seqlens)
        elif cached > 0:
            o = self._decode(q, k, v, f, attention_mask, past_key_values)
        else:
            self._store(past_key_values, k, v, f)
            o = self._prefill(q, k, v, f, attention_mask)
        o = o.reshape(B, T, -1)
        if self.use_output_gate:
            o = torch.sigmoid(self.g_proj(hidden_states)) * o
        return self.o_proj(o), None, past_key_values

    def _forward_context_parallel(self, q, k, v, f, cp: CPContext, cu_seqlens) -> torch.Tensor:
        """This rank's slice ``q [B, T, H, D]``, ``k, v [B, T, Hkv, D]``, ``f [B, T, H]`` of sequences split over
        ``cp`` (module docstring)."""
        B, carried, n = q.shape[0], cp.carried[cp.rank], cp.first_len
        # the first piece's document on the earlier ranks: k | v | log f, float32 (the gates' sums stay exact)
        kvf = torch.cat([k.flatten(2).float(), v.flatten(2).float(), f], -1)  # [B, T, 2 * kv_dim + H]
        ek, ev, ef = earlier_tokens(kvf, cp).split([self.kv_dim, self.kv_dim, self.num_heads], -1)
        k_first = torch.cat([ek.view(B, carried, self.num_kv_heads, self.head_dim).to(k.dtype), k[:, :n]], 1)
        v_first = torch.cat([ev.view(B, carried, self.num_kv_heads, self.head_dim).to(v.dtype), v[:, :n]], 1)
        q_first = torch.cat([q.new_zeros(B, carried, self.num_heads, self.head_dim), q[:, :n]], 1)
        f_first = torch.cat([ef, f[:, :n]], 1)
        o = parallel_forgetting_attn(q_first, k_first, v_first, f_first, window_size=self.window_size)[:, carried:]
        return cp.with_other_pieces(
            o, lambda: parallel_forgetting_attn(q, k, v, f, window_size=self.window_size, cu_seqlens=cu_seqlens)
        )

    def _store(self, cache: FLACache | None, k, v, f) -> dict | None:
        if cache is None:
            return None
        return cache.update(
            attn_state=(k, v, f),
            layer_idx=self.layer_idx,
            offset=k.shape[1],
            cache_kwargs={"window_size": self.window_size},
        )

    def _prefill(self, q, k, v, f, attention_mask) -> torch.Tensor:
        """Empty cache: the whole (possibly padded) batch at once."""
        if attention_mask is None:
            return parallel_forgetting_attn(q, k, v, f, window_size=self.window_size)
        info = get_padding_info(attention_mask)
        o = parallel_forgetting_attn(
            *(unpad(t, info)[None] for t in (q, k, v, f)), window_size=self.window_size, cu_seqlens=info.cu_seqlens
        )
        return repad(o[0], info)

    def _decode(self, q, k, v, f, attention_mask, cache) -> torch.Tensor:
        """New tokens after a non-empty cache, one at a time over the cached and earlier new keys."""
        T = q.shape[1]
        if attention_mask is not None:
            decode_offsets(attention_mask, T)  # raises when a new token is padding
        previous = cache[self.layer_idx]["attn_state"]
        state = self._store(cache, k, v, f)["attn_state"]
        if self.window_size is not None and T > 1:  # the window cache dropped keys the first new queries see
            state = tuple(torch.cat([p, n], 1) for p, n in zip(previous, (k, v, f)))
        L = state[0].shape[1]
        outs = []
        for t in range(T):
            end = L - T + t + 1  # keys of new token t: every position up to its own
            keys = [x[:, :end] for x in state]
            if attention_mask is None:
                B = q.shape[0]
                cu = torch.arange(0, (B + 1) * end, end, dtype=torch.int32, device=q.device)
                packed = [x.reshape(1, B * end, *x.shape[2:]) for x in keys]
            else:
                info = get_padding_info(attention_mask[:, -L:][:, :end])
                cu, packed = info.cu_seqlens, [unpad(x, info)[None] for x in keys]
            outs.append(attn_decoding_one_step(q[:, t][None], *packed, cu_seqlens=cu, window_size=self.window_size)[0])
        return torch.stack(outs, 1)


__all__ = ["ForgettingAttention"]
