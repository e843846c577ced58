"""ABC attention (Peng et al. 2022, https://arxiv.org/abs/2110.02488), parameter-compatible with fla 0.6.0.

Per head, ``M = num_slots`` slots, each a softmax-weighted running average of the keys (values)
(maths: ``fla/ops/abc/README.md``)::

    q, k, v = q_proj x, k_proj x, v_proj x       (SiLU short convolutions / swish input gate, when used)
    q, k    = rotary(q), rotary(k)               (use_rope)
    s_t     = clamp(s_proj x_t, clamp_min, clamp_max)      slot logits, [M]
    o_t     = softmax(q_t Kslots_t^T / sqrt(K)) Vslots_t   (chunk_abc / fused_recurrent_abc)
    out_t   = o_proj(norm_and_gate(o_t))         per-head RMSNorm, swish output gate (g_proj) when used

Parameters (fla's names): ``q_proj``, ``k_proj``, ``v_proj``, ``g_proj`` (``use_output_gate``), ``s_proj``
(``[num_heads * num_slots, hidden]``), ``o_proj``, ``{q,k,v}_conv1d``, ``g_norm`` (``use_norm``; gated with
the output gate); the rotary tables are buffers. The cached state is ``(hk, hv, z)``: ``z [N, H, M]`` is
the slots' running log normalizer, so decoding continues a sequence exactly (fla 0.6.0 has no decode path
for ABC). Batches, padding, the cache: :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_abc
from fla.layers.linear_mixer import LinearMixer, MixerStep, split_heads
from fla.modules.gated_norm import FusedRMSNormGated
from fla.modules.norm import RMSNorm
from fla.modules.rotary import RotaryEmbedding
from fla.ops.abc import chunk_abc, fused_recurrent_abc


class ABCAttention(LinearMixer):
    """ABC token mixer (fla's ``ABCAttention`` signature and parameter names).

    Args:
        hidden_size, expand_k, expand_v, num_heads: widths (``key_dim = hidden_size * expand_k``,
            ``value_dim = hidden_size * expand_v``) and heads.
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        num_slots: slots per head ``M`` (default: the per-head key width).
        elementwise_affine, norm_eps: of the per-head output norm.
        gate_low_rank_dim, gate_logit_normalizer: accepted and stored (fla's layer uses neither).
        use_rope: rotary positions on q and k. use_input_gate: swish on q, k, v.
        use_output_gate: a swish output gate ``g_proj``. use_norm: the per-head RMSNorm ``g_norm``.
        clamp_min, clamp_max: bounds of the slot logits (``None``: unbounded).
        layer_idx: index in the cache (required with a cache).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    cp_op = staticmethod(cp_abc)
    chunk_op = staticmethod(chunk_abc)
    recurrent_op = staticmethod(fused_recurrent_abc)

    def __init__(
        self,
        hidden_size: int = 1024,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        num_slots: int | None = None,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: int = 16,
        use_rope: bool = True,
        use_input_gate: bool = False,
        use_output_gate: bool = True,
        use_norm: bool = True,
        clamp_min: float | None = -32,
        clamp_max: float | None = 32,
        layer_idx: int | None = None,
        mode: str = "chunk",
        **kwargs,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, None, layer_idx, None)
        self.num_slots = self.head_k_dim if num_slots is None else num_slots
        if not isinstance(self.num_slots, int) or self.num_slots <= 0:
            raise ValueError(f"ABCAttention: num_slots must be a positive int, got {num_slots!r}")
        self.gate_low_rank_dim, self.gate_logit_normalizer = gate_low_rank_dim, gate_logit_normalizer
        self.use_rope, self.use_input_gate, self.use_norm = use_rope, use_input_gate, use_norm
        self.use_output_gate = use_output_gate
        self.clamp_min, self.clamp_max = clamp_min, clamp_max
        self.norm_eps = norm_eps
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.s_proj = nn.Linear(hidden_size, self.num_heads * self.num_slots, bias=False)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        affine = bool(elementwise_affine)
        self.fuse_norm_and_gate = use_norm and use_output_gate
        if self.fuse_norm_and_gate:
            self.g_norm = FusedRMSNormGated(self.head_v_dim, elementwise_affine=affine, eps=norm_eps)
        elif use_norm:
            self.g_norm = RMSNorm(self.head_v_dim, elementwise_affine=affine, eps=norm_eps)
        self.rotary = RotaryEmbedding(dim=self.head_k_dim) if use_rope else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_slots={self.num_slots}"

    def feature_maps(self, step: MixerStep, q, k, v):
        """The swish input gate (``use_input_gate``), then rotary positions of q and k (``use_rope``)."""
        if self.use_input_gate:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        if self.rotary is not None:
            q, k = self.rotate(step, q, k)
        return q, k, v

    def mix(self, step, q, k, v):
        """Clamped slot logits ``s`` -> chunk / recurrent ABC."""
        s = split_heads(self.s_proj(step.x), self.num_slots)
        if self.clamp_min is not None or self.clamp_max is not None:
            s = s.clamp(self.clamp_min, self.clamp_max)
        return self.run(step, q, k, v, s)

    def norm_and_gate(self, step, o):
        """Per-head RMSNorm (gated by ``swish(g_proj x)`` with the output gate) or ``swish(g) * o`` without the
        norm: ``[.., H, V] -> [.., value_dim]``."""
        if self.fuse_norm_and_gate:
            return self.g_norm(o, split_heads(self.g_proj(step.x), self.head_v_dim)).flatten(-2)
        if self.use_norm:
            o = self.g_norm(o)
        o = o.flatten(-2)
        if self.use_output_gate:
            o = F.silu(self.g_proj(step.x)) * o
        return o


__all__ = ["ABCAttention"]
