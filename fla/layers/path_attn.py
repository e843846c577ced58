"""PaTH attention (Yang et al. 2025, "PaTH Attention: Position Encoding via Accumulating Householder
Transformations"), parameter-compatible with fla 0.6.0's ``PaTHAttention``.

Softmax attention without rotary positions: the score of query ``i`` and key ``j`` carries the product of the
data-dependent Householder factors of the tokens between them,
``s_ij = (q_i^T H_i ... H_{j+1} k_j + G_i - G_j) / sqrt(D)``, ``H_t = I - beta_t w_t w_t^T`` with
``w_t = l2norm(silu(conv(w_proj(x))))`` per key head, ``beta_t = 2 sigmoid(bt_proj(x_t))`` (in ``(0, 2)``: negative
eigenvalues allowed) and, with ``use_forget_gate``, ``G`` the cumsum of ``logsigmoid(g_proj(x))`` per query head
(:func:`fla.ops.path_attn.parallel_path_attn`).

Parameters: ``q_proj``, ``k_proj``, ``v_proj``, ``w_proj`` (``use_low_rank_w``: ``Sequential(Linear(D, 32),
Linear(32, kv_dim))``), ``w_conv1d`` (``use_w_shortconv``, SiLU), ``bt_proj`` (with bias), ``g_proj``
(``use_forget_gate``, with bias), ``maybe_q_norm`` / ``maybe_k_norm`` (``use_qk_norm``: per-head RMS norms),
``o_proj``.

Inputs: ``cu_seqlens [S+1]`` (packed, ``B == 1``, empty cache), a padding mask ``attention_mask [B, cached + T]``
(a padded prefill runs the real tokens as a packed batch; with a cache the new tokens must be real: left
padding), or neither. ``position_ids`` are ignored (the Householder products carry the positions).

Cache (:class:`fla.models.cache.FLACache`): ``attn_state = (k, v[, g])`` with the keys *as the last cached token
sees them*, ``H_last ... H_{j+1} k_j`` ``[B, L, Hkv, D]`` (the prefill's ``use_cache`` output of the op),
``v [B, L, Hkv, D]``, ``g [B, L, H]``; ``conv_state`` the w convolution's ``[B, kv_dim, conv_size]``. Each new
token first applies its own factor to every cached key (:func:`fla.ops.path_attn.path_rank_one_update`), then
appends its raw key and attends like FoX (:func:`fla.ops.attn.attn_decoding_one_step`, gate times scale).

Context parallel (``cp_context``, a :class:`fla.context_parallel.CPContext`): the w convolution reads the previous
rank's last inputs; the ranks gather every rank's ``k | v | w | beta | g``, and the first local piece runs over its
document's earlier tokens and its own with zero queries there (the Householder products and gate sums between an
earlier key and a local query run through both), as FoX does: ``O((carried + T)^2)`` work on the last ranks of a
long document. Training only (no cache, no padding mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import CPContext, conv_with_halo, earlier_tokens
from fla.layers.utils import (
    begin_layer_call,
    decode_offsets,
    get_padding_info,
    repad,
    unpad,
)
from fla.modules import RMSNorm, ShortConvolution
from fla.ops.attn import attn_decoding_one_step
from fla.ops.common.inputs import l2norm
from fla.ops.path_attn import parallel_path_attn, path_rank_one_update

if TYPE_CHECKING:
    from fla.models.cache import FLACache

W_RANK = 32  # inner width of the low-rank w projection (fla's)


class PaTHAttention(nn.Module):
    """Causal softmax attention with Householder-product positions (PaTH), grouped key/value heads.

    Args:
        hidden_size: model width; the head dim is ``hidden_size // num_heads``.
        num_heads: query heads (and forget-gate heads).
        num_kv_heads: key/value (and Householder) heads, default ``num_heads``; must divide ``num_heads``.
        use_forget_gate: add FoX's data-dependent forget gate (``g_proj``).
        use_qk_norm: per-head RMS norm of q and k.
        layer_idx: index of this layer in the cache (required when a cache is used).
        use_low_rank_w: ``w_proj`` through a rank-32 bottleneck.
        use_w_shortconv: depthwise causal convolution (SiLU) on ``w``.
        conv_size, conv_bias: the w convolution's kernel size and bias.

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    """Runs under ``cp_context`` (module docstring)."""

    def __init__(
        self,
        hidden_size: int = 2048,
        num_heads: int = 32,
        num_kv_heads: int | None = None,
        use_forget_gate: bool = False,
        use_qk_norm: bool = False,
        layer_idx: int | None = None,
        use_low_rank_w: bool = True,
        use_w_shortconv: bool = True,
        conv_size: int = 3,
        conv_bias: bool = False,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if hidden_size % num_heads != 0:
            raise ValueError(f"PaTHAttention: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"PaTHAttention: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.use_forget_gate = use_forget_gate
        self.use_qk_norm = use_qk_norm
        self.use_low_rank_w = use_low_rank_w
        self.use_w_shortconv = use_w_shortconv
        self.conv_size = conv_size
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=False)
        if use_low_rank_w:  # fla: low rank keeps MHA's w projection small
            self.w_proj = nn.Sequential(
                nn.Linear(hidden_size, W_RANK, bias=False), nn.Linear(W_RANK, self.kv_dim, bias=False)
            )
        else:
            self.w_proj = nn.Linear(hidden_size, self.kv_dim, bias=False)
        if use_qk_norm:
            self.maybe_q_norm = RMSNorm(self.head_dim, dtype=torch.float32)
            self.maybe_k_norm = RMSNorm(self.head_dim, dtype=torch.float32)
        if use_w_shortconv:
            self.w_conv1d = ShortConvolution(self.kv_dim, conv_size, bias=conv_bias, activation="silu")
        self.bt_proj = nn.Linear(hidden_size, num_kv_heads, bias=True)
        if use_forget_gate:
            self.g_proj = nn.Linear(hidden_size, num_heads, bias=True)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"

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
        x = hidden_states
        q, k, v, w = self.q_proj(x), self.k_proj(x), self.v_proj(x), self.w_proj(x)
        beta = 2 * torch.sigmoid(self.bt_proj(x).float())  # [B, T, Hkv], in (0, 2)
        g = F.logsigmoid(self.g_proj(x).float()) if self.use_forget_gate else None  # [B, T, H]
        cp = kwargs.get("cp_context")
        if cp is not None:
            cp.check_call(type(self).__name__, past_key_values is not None, attention_mask is not None, cu_seqlens)
            o = self._forward_context_parallel(q, k, v, w, beta, g, cp, cu_seqlens)
        elif cu_seqlens is not None:
            o = self._prefill(q, k, v, w, beta, g, cu_seqlens, past_key_values)
        elif cached > 0:
            o = self._decode(q, k, v, w, beta, g, attention_mask, past_key_values)
        elif attention_mask is None:
            o = self._prefill(q, k, v, w, beta, g, None, past_key_values)
        else:  # a padded prefill: the real tokens as a packed batch
            info = get_padding_info(attention_mask)
            packed = [None if t is None else unpad(t, info)[None] for t in (q, k, v, w, beta, g)]
            o = repad(self._prefill(*packed, info.cu_seqlens, past_key_values, info)[0], info)
        return self.o_proj(o.reshape(B, T, -1)), None, past_key_values

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.view(*x.shape[:2], n, self.head_dim)

    def _qkw(self, q, k, w, conv_state, cu_seqlens, store: bool, cp: CPContext | None = None):
        """Heads, q/k norms and the Householder directions (conv, l2norm in float32); the new conv state. Under
        context parallel ``cp`` the convolution reads the previous rank's last inputs."""
        new_state = None
        if self.use_w_shortconv and cp is not None:
            w = conv_with_halo(self.w_conv1d, w, cp, cu_seqlens)
        elif self.use_w_shortconv:
            w, new_state = self.w_conv1d(w, cache=conv_state, output_final_state=store, cu_seqlens=cu_seqlens)
        q, k = self._heads(q, self.num_heads), self._heads(k, self.num_kv_heads)
        if self.use_qk_norm:
            q, k = self.maybe_q_norm(q).to(q.dtype), self.maybe_k_norm(k).to(k.dtype)
        w = l2norm(self._heads(w, self.num_kv_heads).float())
        return q, k, w, new_state

    def _forward_context_parallel(self, q, k, v, w, beta, g, cp: CPContext, cu_seqlens) -> torch.Tensor:
        """This rank's slice (projections ``[B, T, ..]``, ``beta [B, T, Hkv]``, ``g [B, T, H]`` or ``None``) of
        sequences split over ``cp`` (module docstring): ``[B, T, H, D]``."""
        B, carried, n = q.shape[0], cp.carried[cp.rank], cp.first_len
        q, k, w, _ = self._qkw(q, k, w, None, cu_seqlens, False, cp)
        v = self._heads(v, self.num_kv_heads)
        # the first piece's document on the earlier ranks: k | v | w | beta (| g), float32
        local = [k.flatten(2).float(), v.flatten(2).float(), w.flatten(2), beta] + ([] if g is None else [g])
        sizes = [t.shape[-1] for t in local]
        earlier = earlier_tokens(torch.cat(local, -1), cp).split(sizes, -1)
        heads = [self.num_kv_heads] * 3

        def first(i: int, t: torch.Tensor) -> torch.Tensor:  # earlier tokens, then the local first piece
            e = earlier[i].view(B, carried, heads[i], self.head_dim) if i < 3 else earlier[i]
            return torch.cat([e.to(t.dtype), t[:, :n]], 1)

        q_first = torch.cat([q.new_zeros(B, carried, *q.shape[2:]), q[:, :n]], 1)
        g_first = None if g is None else first(4, g)
        o = parallel_path_attn(q_first, first(0, k), first(1, v), first(2, w), first(3, beta), g_first)[0]
        o = o[:, carried:]
        return cp.with_other_pieces(o, lambda: parallel_path_attn(q, k, v, w, beta, g, cu_seqlens=cu_seqlens)[0])

    def _prefill(self, q, k, v, w, beta, g, cu_seqlens, cache, info=None) -> torch.Tensor:
        """Empty cache: the whole batch (dense or packed) at once; fills the cache when one is given."""
        store = cache is not None
        q, k, w, conv_state = self._qkw(q, k, w, None, cu_seqlens, store)
        v = self._heads(v, self.num_kv_heads)
        o, k_cache = parallel_path_attn(q, k, v, w, beta, g, cu_seqlens=cu_seqlens, use_cache=store)
        if store:
            state = (k_cache, v) if g is None else (k_cache, v, g)
            if info is not None:  # back to the padded batch (zeros at padding)
                state = tuple(repad(t[0], info) for t in state)
            cache.update(attn_state=state, conv_state=conv_state, layer_idx=self.layer_idx, offset=state[0].shape[1])
        return o

    def _decode(self, q, k, v, w, beta, g, attention_mask, cache) -> torch.Tensor:
        """New tokens after a non-empty cache, one at a time: transform the cached keys, append, attend."""
        B, T = q.shape[:2]
        if attention_mask is not None:
            decode_offsets(attention_mask, T)  # raises when a new token is padding
        layer = cache[self.layer_idx]
        q, k, w, conv_state = self._qkw(q, k, w, layer["conv_state"], None, True)
        v = self._heads(v, self.num_kv_heads)
        outs = []
        for t in range(T):
            past = layer["attn_state"]
            # token t's Householder factor acts on every earlier key
            layer["attn_state"] = (path_rank_one_update(past[0], w[:, t], beta[:, t]), *past[1:])
            new = (k[:, t : t + 1], v[:, t : t + 1]) + (() if g is None else (g[:, t : t + 1],))
            state = cache.update(
                attn_state=new,
                conv_state=conv_state if t == T - 1 else None,
                layer_idx=self.layer_idx,
                offset=1,
            )["attn_state"]
            L = state[0].shape[1]
            if attention_mask is None:
                cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=q.device)
                packed = [x.reshape(1, B * L, *x.shape[2:]) for x in state]
            else:
                info = get_padding_info(attention_mask[:, :L])
                cu, packed = info.cu_seqlens, [unpad(x, info)[None] for x in state]
            o = attn_decoding_one_step(q[:, t][None], *packed, cu_seqlens=cu, do_gate_scale=True)
            outs.append(o[0])
        return torch.stack(outs, 1)


__all__ = ["PaTHAttention"]
