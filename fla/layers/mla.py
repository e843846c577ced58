"""Multi-head latent attention (MLA, DeepSeek-V2), parameter-compatible with fla 0.6.0.

The maths, per token ``x [hidden_size]`` and head ``h`` (``Dn = qk_nope_head_dim``,
``Dr = qk_rope_head_dim``, ``Dv = v_head_dim``, ``R = kv_lora_rank``)::

    q      = W_qb RMSNorm(W_qa x)        (or W_q x when q_lora_rank is None)  -> [H, Dn + Dr]
    c_kv   = RMSNorm(W_kva x)                                                    [R]   (the latent)
    k_r    = RoPE(W_kr x)                                                        [Dr]  (one for all heads)
    [k_n, v] = W_kvb c_kv                                                        [H, Dn + Dv]
    k_h    = [k_n_h, k_r],  q_h = [q_n_h, RoPE(q_r_h)]
    o_h    = causal softmax(q_h k_h^T / sqrt(Dn + Dr)) v_h  ->  o_proj [H * Dv -> hidden_size]

Parameters (fla 0.6.0's names): ``q_proj`` = ``Sequential(Linear(hidden, q_lora_rank), RMSNorm,
Linear(q_lora_rank, H * (Dn + Dr)))`` or one ``Linear`` without ``q_lora_rank``; ``k_rope``
(``W_kr``); ``kv_proj`` = ``Sequential(Linear(hidden, R), RMSNorm(R), Linear(R, H * (Dn + Dv)))``
(down-projection, kv norm, up-projection); ``o_proj``. The RMSNorms keep float32 weights (as fla's).

The attention runs in :mod:`fla.layers.attention_backends` (flash-attn, torch ``varlen_attn`` or
SDPA: no flash-attn needed). When ``Dv != Dn + Dr`` the narrower side is zero-padded to a common
head dim (zeros in q/k change no score; zeros in v give zero outputs that are dropped), with the
softmax scale kept at ``(Dn + Dr) ** -0.5``. As in fla 0.6.0, ``rope_scaling`` is stored but changes
neither the RoPE tables nor the softmax scale.

Positions and inputs follow :class:`fla.layers.attn.Attention` (``cu_seqlens``, padding masks,
``position_ids``, sliding window). The cache is compressed: per token it keeps the normalized
latent ``c_kv [R]`` and the rotated shared key ``k_r [Dr]`` (``attn_state = (c_kv [B, L, R],
k_r [B, L, Dr])`` in :class:`fla.models.cache.FLACache`), and each step re-expands the visible
latents into per-head keys and values with ``W_kvb``.

Context parallel (``cp_context``, as :class:`fla.layers.attn.Attention`): positions go on from the earlier ranks and
the first local piece attends its document's tokens on the earlier ranks too; the ranks gather the latents
``[c_kv | k_r]`` (``R + Dr`` numbers per token, against ``2 H D`` for keys and values) and expand them locally.
Training only (no cache, no padding mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"MultiheadLatentAttention: {name} must be a positive integer, got {value!r}")


class MultiheadLatentAttention(nn.Module):
    """Causal multi-head latent attention with decoupled RoPE and a compressed KV cache.

    Args:
        hidden_size: model width.
        num_heads: attention heads ``H``.
        q_lora_rank: rank of the low-rank query projection (``None``: one full projection).
        qk_rope_head_dim: per-head width ``Dr`` of the rotary part of q and k (even).
        kv_lora_rank: width ``R`` of the compressed key/value latent.
        v_head_dim: per-head value width ``Dv``.
        qk_nope_head_dim: per-head width ``Dn`` of the non-rotary part of q and k.
        qk_head_dim: ``Dn + Dr`` (checked; ``None``: computed).
        window_size: sliding window in tokens (``None``: full causal attention).
        rope_theta: RoPE base.
        max_position_embeddings: size the RoPE tables are built for up front (they grow on demand).
        rope_scaling: stored only (fla 0.6.0 applies it nowhere either).
        layer_idx: index of this layer in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    """Runs under ``cp_context`` (module docstring)."""

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 16,
        q_lora_rank: int | None = 1536,
        qk_rope_head_dim: int = 64,
        kv_lora_rank: int = 512,
        v_head_dim: int = 128,
        qk_nope_head_dim: int = 128,
        qk_head_dim: int | None = 192,
        window_size: int | None = None,
        rope_theta: float = 10000.0,
        max_position_embeddings: int | None = None,
        rope_scaling: dict | None = None,
        layer_idx: int | None = None,
    ):
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_heads", num_heads),
            ("qk_rope_head_dim", qk_rope_head_dim),
            ("kv_lora_rank", kv_lora_rank),
            ("v_head_dim", v_head_dim),
            ("qk_nope_head_dim", qk_nope_head_dim),
        ):
            _positive(name, value)
        if q_lora_rank is not None:
            _positive("q_lora_rank", q_lora_rank)
        if qk_rope_head_dim % 2:
            raise ValueError(f"MultiheadLatentAttention: qk_rope_head_dim={qk_rope_head_dim} must be even (RoPE)")
        if qk_head_dim is not None and qk_head_dim != qk_nope_head_dim + qk_rope_head_dim:
            raise ValueError(
                f"MultiheadLatentAttention: qk_head_dim={qk_head_dim} != qk_nope_head_dim + qk_rope_head_dim "
                f"= {qk_nope_head_dim} + {qk_rope_head_dim}"
            )
        if window_size is not None and (isinstance(window_size, bool) or window_size <= 0):
            raise ValueError(
                f"MultiheadLatentAttention: window_size must be a positive integer or None, got {window_size!r}"
            )
        if rope_theta is None:
            raise ValueError("MultiheadLatentAttention: rope_theta is required (RoPE on the decoupled dims)")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.q_lora_rank = q_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        self.kv_lora_rank = kv_lora_rank
        self.v_head_dim = v_head_dim
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.window_size = window_size
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.rope_scaling = rope_scaling
        self.layer_idx = layer_idx

        q_out = num_heads * self.qk_head_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(hidden_size, q_out, bias=False)
        else:
            self.q_proj = nn.Sequential(
                nn.Linear(hidden_size, q_lora_rank, bias=False),
                RMSNorm(q_lora_rank, dtype=torch.float32),
                nn.Linear(q_lora_rank, q_out, bias=False),
            )
        self.k_rope = nn.Linear(hidden_size, qk_rope_head_dim, bias=False)
        self.kv_proj = nn.Sequential(
            nn.Linear(hidden_size, kv_lora_rank, bias=False),
            RMSNorm(kv_lora_rank, dtype=torch.float32),
            nn.Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False),
        )
        self.o_proj = nn.Linear(num_heads * v_head_dim, hidden_size, bias=False)
        self.rotary = RotaryEmbedding(dim=qk_rope_head_dim, base=rope_theta)

    def extra_repr(self) -> str:
        text = (
            f"num_heads={self.num_heads}, q_lora_rank={self.q_lora_rank}, kv_lora_rank={self.kv_lora_rank}, "
            f"qk_nope_head_dim={self.qk_nope_head_dim}, qk_rope_head_dim={self.qk_rope_head_dim}, "
            f"v_head_dim={self.v_head_dim}"
        )
        if self.window_size is not None:
            text += f", window_size={self.window_size}"
        return text

    @property
    def cache_dim(self) -> int:
        """Numbers the cache keeps per token and layer: ``kv_lora_rank + qk_rope_head_dim``."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    # ---- the pieces of the maths ----------------------------------------------------------------------

    def latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, hidden_size]`` -> ``(c_kv [B, T, R], k_r [B, T, 1, Dr])`` (k_r before RoPE)."""
        c_kv = self.kv_proj[1](self.kv_proj[0](x))
        return c_kv, self.k_rope(x).unsqueeze(2)

    def expand(self, c_kv: torch.Tensor, k_rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompress ``c_kv [B, L, R]`` and the rotated ``k_rot [B, L, Dr]`` into per-head
        ``k [B, L, H, Dn + Dr]`` and ``v [B, L, H, Dv]``."""
        B, L = c_kv.shape[:2]
        kv = self.kv_proj[2](c_kv).view(B, L, self.num_heads, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k_rot = k_rot.unsqueeze(2).expand(B, L, self.num_heads, self.qk_rope_head_dim).to(k_nope.dtype)
        return torch.cat([k_nope, k_rot], dim=-1), v

    def _rope(self, q_rot, k_rot, seqlen_offset=0, max_seqlen: int = 0, cu_seqlens=None):
        max_seqlen = max(max_seqlen, self.max_position_embeddings or 0)
        return self.rotary(q_rot, k_rot, seqlen_offset=seqlen_offset, max_seqlen=max_seqlen, cu_seqlens=cu_seqlens)

    def _same_head_dim(self, q, k, v) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]:
        """Zero-pad q/k or v to one head dim for the attention backends; the scale stays ``(Dn + Dr) ** -0.5``."""
        dqk, dv = self.qk_head_dim, self.v_head_dim
        if dv < dqk:
            return q, k, F.pad(v, (0, dqk - dv)), None
        if dv > dqk:
            return F.pad(q, (0, dv - dqk)), F.pad(k, (0, dv - dqk)), v, dqk**-0.5
        return q, k, v, None

    def _dense(self, q, c_kv, k_rot, key_mask=None) -> torch.Tensor:
        """``q [B, Tq, H, Dn + Dr]`` over the latents ``c_kv [B, Tk, R]``, ``k_rot [B, Tk, Dr]``: ``[B, Tq, H, Dv]``."""
        k, v = self.expand(c_kv, k_rot)
        q, k, v, scale = self._same_head_dim(q, k, v)
        o = attention_dense(q, k, v, key_mask=key_mask, window_size=self.window_size, scale=scale)
        return o[..., : self.v_head_dim]

    def _varlen(self, q, c_kv, k_rot, cu_seqlens, max_seqlen: int) -> torch.Tensor:
        """Packed ``q [N, H, Dn + Dr]``, ``c_kv [N, R]``, ``k_rot [N, Dr]`` -> ``[N, H, Dv]``."""
        k, v = self.expand(c_kv[None], k_rot[None])
        q, k, v, scale = self._same_head_dim(q, k[0], v[0])
        o = attention_varlen(q, k, v, cu_seqlens, max_seqlen, self.window_size, scale=scale)
        return o[..., : self.v_head_dim]

    def _cached_latents(self, cache: FLACache, c_kv: torch.Tensor, k_rot: torch.Tensor):
        """Store the new ``c_kv [B, T, R]``, ``k_rot [B, T, Dr]``; return every latent the new queries may see."""
        previous = cache[self.layer_idx]["attn_state"] if cache.get_seq_length(self.layer_idx) > 0 else None
        state = cache.update(
            attn_state=(c_kv, k_rot),
            layer_idx=self.layer_idx,
            offset=c_kv.shape[1],
            cache_kwargs={"window_size": self.window_size},
        )
        if previous is None:
            return c_kv, k_rot
        if self.window_size is None or c_kv.shape[1] == 1:
            return state["attn_state"]
        # the window cache dropped latents the first new queries still see: rebuild from the previous state
        return torch.cat([previous[0], c_kv], 1), torch.cat([previous[1], k_rot], 1)

    # ---- forward --------------------------------------------------------------------------------------

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

        Args: as :meth:`fla.layers.attn.Attention.forward` (``attention_mask [B, cached + T]``,
        ``cu_seqlens [S+1]`` with ``B == 1``, ``position_ids [B or 1, T]``, ``past_key_values``).
        """
        cached, attention_mask = begin_layer_call(
            self, hidden_states, attention_mask, past_key_values, cu_seqlens, output_attentions
        )
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.qk_head_dim)
        c_kv, k_rot = self.latent(hidden_states)
        cp = kwargs.get("cp_context")
        if cp is not None:
            cp.check_call(type(self).__name__, past_key_values is not None, attention_mask is not None, cu_seqlens)
            o = self._forward_context_parallel(q, c_kv, k_rot, cp, cu_seqlens)
        elif cu_seqlens is not None:
            o = self._forward_varlen(q, c_kv, k_rot, cu_seqlens, past_key_values)
        elif attention_mask is not None:
            if cached == 0:
                o = self._forward_unpadded(q, c_kv, k_rot, attention_mask, past_key_values)
            else:
                offsets, top = decode_offsets(attention_mask, T)  # real cached tokens per row
                q, k_rot = self._rope_q(q, k_rot, seqlen_offset=offsets, max_seqlen=top + T)
                c_kv, k_rot = self._cached_latents(past_key_values, c_kv, k_rot)
                o = self._dense(q, c_kv, k_rot, key_mask=attention_mask[:, -c_kv.shape[1] :].bool())
        else:
            offset = cached if position_ids is None else offsets_from_position_ids(position_ids, B, T)
            top = offset if isinstance(offset, int) else int(offset.max())
            q, k_rot = self._rope_q(q, k_rot, seqlen_offset=offset, max_seqlen=top + T)
            if past_key_values is not None:
                c_kv, k_rot = self._cached_latents(past_key_values, c_kv, k_rot)
            o = self._dense(q, c_kv, k_rot)
        return self.o_proj(o.reshape(B, T, -1)), None, past_key_values

    def _rope_q(self, q, k_rot, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE on the last ``Dr`` dims of ``q [B, T, H, Dn + Dr]`` and on ``k_rot [B, T, 1, Dr]`` -> ``[B, T, Dr]``."""
        q_nope, q_rot = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        q_rot, k_rot = self._rope(q_rot, k_rot, **kwargs)
        return torch.cat([q_nope, q_rot], dim=-1), k_rot.squeeze(2)

    def _forward_varlen(self, q, c_kv, k_rot, cu_seqlens, cache) -> torch.Tensor:
        max_seqlen = q.shape[1]  # bounds every sequence without a host sync
        q, k_rot = self._rope_q(q, k_rot, max_seqlen=max_seqlen, cu_seqlens=cu_seqlens)
        if cache is not None:
            self._cached_latents(cache, c_kv, k_rot)
        return self._varlen(q[0], c_kv[0], k_rot[0], cu_seqlens, max_seqlen)[None]

    def _forward_context_parallel(self, q, c_kv, k_rot, cp: CPContext, cu_seqlens) -> torch.Tensor:
        """This rank's slice ``q [B, T, H, Dn + Dr]``, ``c_kv [B, T, R]``, ``k_rot [B, T, 1, Dr]`` of sequences split
        over ``cp`` (module docstring): ``[B, T, H, Dv]``."""
        T, carried, n = q.shape[1], cp.carried[cp.rank], cp.first_len
        offsets = cp.position_offsets()
        q, k_rot = self._rope_q(q, k_rot, seqlen_offset=offsets, max_seqlen=carried + T, cu_seqlens=cu_seqlens)
        # the first piece's document on the earlier ranks, as latents
        earlier = earlier_tokens(torch.cat([c_kv, k_rot.to(c_kv.dtype)], -1), cp)
        e_c, e_r = earlier.split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        o = self._dense(q[:, :n], torch.cat([e_c, c_kv[:, :n]], 1), torch.cat([e_r.to(k_rot.dtype), k_rot[:, :n]], 1))
        return cp.with_other_pieces(o, lambda: self._varlen(q[0], c_kv[0], k_rot[0], cu_seqlens, T)[None])

    def _forward_unpadded(self, q, c_kv, k_rot, attention_mask, cache) -> torch.Tensor:
        """Padded prefill: the real tokens as a varlen batch; the latents cached in the padded layout."""
        info = get_padding_info(attention_mask)
        q_u, c_u, kr_u = unpad(q, info)[None], unpad(c_kv, info), unpad(k_rot, info)[None]
        q_u, kr_u = self._rope_q(q_u, kr_u, max_seqlen=info.max_seqlen, cu_seqlens=info.cu_seqlens)
        if cache is not None:
            self._cached_latents(cache, repad(c_u, info), repad(kr_u[0], info))
        return repad(self._varlen(q_u[0], c_u, kr_u[0], info.cu_seqlens, info.max_seqlen), info)


__all__ = ["MultiheadLatentAttention"]
