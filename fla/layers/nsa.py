"""Native sparse attention (NSA, Yuan et al. 2025), parameter-compatible with fla 0.6.0's ``NativeSparseAttention``.

Per token: ``q [H, D]``, ``k, v [Hkv, D]`` (RoPE on q and k) and three sigmoid gates per query head
``g = sigmoid(g_proj(x)) [H, 3]`` (compressed, selected, sliding-window branches, in that order), mixed by
:func:`fla.ops.nsa.parallel_nsa`; then ``o_proj``.

Parameters (fla 0.6.0's names): ``q_proj``, ``k_proj``, ``v_proj`` (bias when ``qkv_bias``), ``g_proj``
(``hidden -> 3 H``, no bias), ``o_proj``; ``rotary`` has no parameters.

Inputs: ``cu_seqlens [S+1]`` (packed, ``B == 1``, empty cache), a padding mask ``attention_mask [B, cached + T]``
(a padded prefill runs the real tokens as a packed batch; with a cache the new tokens must be real: left padding),
``position_ids`` (consecutive rows), or none of them.

Cache (:class:`fla.models.cache.FLACache`): ``attn_state = (k, v)`` ``[B, L, Hkv, D]`` (rotated keys), every
position kept (the selection may pick any block). New tokens after a non-empty cache are the last ``T`` queries
over all ``L`` keys: the block means of the compressed branch are recomputed from the cached keys, as in fla.

Context parallel (``cp_context``, as :class:`fla.layers.attn.Attention`): positions go on from the earlier ranks; the
ranks gather every rank's keys and values (after RoPE), and the first local piece runs as the last queries over its
document's keys on the earlier ranks and its own (its compressed blocks and selection over the whole document so
far), the other pieces over their own. Training only (no cache, no padding mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from fla.context_parallel import CPContext, earlier_tokens
from fla.layers.utils import (
    begin_layer_call,
    decode_offsets,
    get_padding_info,
    offsets_from_position_ids,
    repad,
    unpad,
)
from fla.modules.rotary import RotaryEmbedding
from fla.ops.nsa import parallel_nsa

if TYPE_CHECKING:
    from fla.models.cache import FLACache


def _positive(name: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"NativeSparseAttention: {name} must be a {kind} integer, got {value!r}")


class NativeSparseAttention(nn.Module):
    """Causal native sparse attention with grouped key/value heads.

    Args:
        hidden_size: model width.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads (default ``num_heads``); must divide ``num_heads``.
        head_dim: per-head width ``D``.
        qkv_bias: biases on the q/k/v projections.
        block_size: tokens per block (compression and selection).
        block_counts: blocks each query selects.
        window_size: sliding window of the third branch (``0`` / ``None``: no such branch).
        rope_theta: RoPE base.
        max_position_embeddings: size the RoPE tables are built for up front (they grow on demand).
        layer_idx: index of this layer in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    """Runs under ``cp_context`` (module docstring)."""

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 64,
        num_kv_heads: int | None = 4,
        head_dim: int = 64,
        qkv_bias: bool = False,
        block_size: int = 64,
        block_counts: int = 16,
        window_size: int | None = 512,
        rope_theta: float = 10000.0,
        max_position_embeddings: int | None = None,
        layer_idx: int | None = None,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for name, value in (("hidden_size", hidden_size), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
            _positive(name, value)
        for name, value in (("head_dim", head_dim), ("block_size", block_size), ("block_counts", block_counts)):
            _positive(name, value)
        _positive("window_size", window_size or 0, allow_zero=True)
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"NativeSparseAttention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}"
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.qkv_bias = qkv_bias
        self.block_size = block_size
        self.block_counts = block_counts
        self.window_size = window_size
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.g_proj = nn.Linear(hidden_size, num_heads * 3, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.rotary = RotaryEmbedding(dim=head_dim, base=rope_theta)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
            f"block_size={self.block_size}, block_counts={self.block_counts}, window_size={self.window_size}"
        )

    def _nsa(self, q, k, v, g, cu_seqlens=None) -> torch.Tensor:
        """``q [B, TQ, H, D]``, ``k, v [B, TK, Hkv, D]``, gates ``g [B, TQ, H, 3]`` -> ``[B, TQ, H, D]``."""
        g_cmp, g_slc, g_swa = g.unbind(-1)
        return parallel_nsa(
            q, k, v, g_cmp, g_slc, g_swa,
            block_counts=self.block_counts, block_size=self.block_size, window_size=self.window_size or 0,
            cu_seqlens=cu_seqlens,
        )  # fmt: skip

    def _rope(self, q, k, seqlen_offset=0, max_seqlen: int = 0, cu_seqlens=None):
        max_seqlen = max(max_seqlen, self.max_position_embeddings or 0)
        return self.rotary(q, k, seqlen_offset=seqlen_offset, max_seqlen=max_seqlen, cu_seqlens=cu_seqlens)

    def _store(self, cache: FLACache | None, k: torch.Tensor, v: torch.Tensor):
        """Append the new ``k, v [B, T, Hkv, D]`` to the cache; return every cached key and value."""
        if cache is None:
            return k, v
        return cache.update(attn_state=(k, v), layer_idx=self.layer_idx, offset=k.shape[1])["attn_state"]

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
            output_attentions: not supported (warns).
            use_cache: accepted for API compatibility; the cache is used whenever it is given.
            cu_seqlens: ``[S+1]`` packed-sequence boundaries (``B == 1``, empty cache).
            position_ids: ``[B or 1, T]`` consecutive positions (RoPE offsets), or None.
        """
        cached, attention_mask = begin_layer_call(
            self, hidden_states, attention_mask, past_key_values, cu_seqlens, output_attentions
        )
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        g = torch.sigmoid(self.g_proj(hidden_states).view(B, T, self.num_heads, 3))
        cp = kwargs.get("cp_context")
        if cp is not None:
            cp.check_call(type(self).__name__, past_key_values is not None, attention_mask is not None, cu_seqlens)
            o = self._forward_context_parallel(q, k, v, g, cp, cu_seqlens)
        elif cu_seqlens is not None:
            q, k = self._rope(q, k, max_seqlen=T, cu_seqlens=cu_seqlens)
            self._store(past_key_values, k, v)
            o = self._nsa(q, k, v, g, cu_seqlens)
        elif attention_mask is not None and cached == 0:
            o = self._prefill_padded(q, k, v, g, attention_mask, past_key_values)
        elif attention_mask is not None:
            o = self._decode_padded(q, k, v, g, attention_mask, past_key_values)
        else:
            offset = cached if position_ids is None else offsets_from_position_ids(position_ids, B, T)
            top = offset if isinstance(offset, int) else int(offset.max())
            q, k = self._rope(q, k, seqlen_offset=offset, max_seqlen=top + T)
            k, v = self._store(past_key_values, k, v)
            o = self._nsa(q, k, v, g)
        return self.o_proj(o.reshape(B, T, -1)), None, past_key_values

    def _forward_context_parallel(self, q, k, v, g, cp: CPContext, cu_seqlens) -> torch.Tensor:
        """This rank's slice ``q [B, T, H, D]``, ``k, v [B, T, Hkv, D]``, ``g [B, T, H, 3]`` of sequences split over
        ``cp`` (module docstring): ``[B, T, H, D]``."""
        T, carried, n = q.shape[1], cp.carried[cp.rank], cp.first_len
        q, k = self._rope(q, k, seqlen_offset=cp.position_offsets(), max_seqlen=carried + T, cu_seqlens=cu_seqlens)
        ek, ev = earlier_tokens(torch.stack([k, v], 2), cp).unbind(2)  # the first piece's document, earlier ranks
        o = self._nsa(q[:, :n], torch.cat([ek, k[:, :n]], 1), torch.cat([ev, v[:, :n]], 1), g[:, :n])
        return cp.with_other_pieces(o, lambda: self._nsa(q, k, v, g, cu_seqlens))

    def _prefill_padded(self, q, k, v, g, attention_mask, cache) -> torch.Tensor:
        """Empty cache, padded batch: the real tokens as a packed batch; the keys cached in the padded layout."""
        info = get_padding_info(attention_mask)
        q_u, k_u, v_u, g_u = (unpad(t, info)[None] for t in (q, k, v, g))
        q_u, k_u = self._rope(q_u, k_u, max_seqlen=info.max_seqlen, cu_seqlens=info.cu_seqlens)
        if cache is not None:
            self._store(cache, repad(k_u[0], info), repad(v_u[0], info))
        return repad(self._nsa(q_u, k_u, v_u, g_u, info.cu_seqlens)[0], info)

    def _decode_padded(self, q, k, v, g, attention_mask, cache) -> torch.Tensor:
        """New (real) tokens after a left-padded cache: per row, the queries are the last ``T`` real positions."""
        B, T = q.shape[:2]
        offsets, top = decode_offsets(attention_mask, T)  # real cached tokens per row
        q, k = self._rope(q, k, seqlen_offset=offsets, max_seqlen=top + T)
        k, v = self._store(cache, k, v)
        info = get_padding_info(attention_mask[:, -k.shape[1] :])
        cu_q = torch.arange(0, (B + 1) * T, T, dtype=info.cu_seqlens.dtype, device=q.device)
        packed = [x.reshape(1, B * T, *x.shape[2:]) for x in (q, g)]
        o = self._nsa(packed[0], unpad(k, info)[None], unpad(v, info)[None], packed[1], (cu_q, info.cu_seqlens))
        return o.view(B, T, *o.shape[2:])


__all__ = ["NativeSparseAttention"]
