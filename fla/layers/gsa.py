"""Gated Slot Attention (Zhang et al. 2024, https://arxiv.org/abs/2409.07146), parameter-compatible with fla 0.6.0.

Per head, ``M = num_slots`` memory slots with a data-dependent forget gate (maths: ``fla/ops/gsa/README.md``)::

    q, k  = feature_map(q_proj x), feature_map(k_proj x)         (short convolutions first, when used)
    v     = silu(v_proj x)
    g_t   = logsigmoid(f_proj x_t) / gate_logit_normalizer       log forget gates of the slots, [M]
    s_t   = 1 - exp(g_t)                                          slot writes
    o_t   = softmax(scale * q_t Hk_t) Hv_t                        (chunk_gsa / fused_recurrent_gsa)
    out_t = o_proj(RMSNorm(silu(o_t)))                            RMSNorm over all heads (value_dim wide)

Parameters (fla's names): ``q_proj``, ``k_proj``, ``v_proj`` (``k`` and ``v`` per kv group), ``f_proj``
(``[num_kv_heads * num_slots, hidden]``), ``{q,k,v}_conv1d`` (SiLU short convolutions), ``feature_map``
(parameters only for ``"t2r"``), ``g_norm``, ``o_proj``. The cached state is ``(hk [N, H, K, M],
hv [N, H, M, V])``. Batches, padding, the cache: :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from fla.context_parallel import cp_gsa
from fla.layers.linear_mixer import LinearMixer
from fla.layers.utils import FLA060_FUSED_OUTPUT_NORM_EPS
from fla.modules.feature_map import T2RFeatureMap
from fla.modules.norm import RMSNorm
from fla.ops.gsa import chunk_gsa, fused_recurrent_gsa

GSA_FEATURE_MAPS = ("swish", "relu", "t2r")


def slot_feature_map(name: str, head_dim: int) -> nn.Module:
    """fla's GSA feature maps: ``"swish"`` (SiLU), ``"relu"``, ``"t2r"`` (a learned ``relu(W x)``)."""
    if name == "swish":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "t2r":
        return T2RFeatureMap(head_dim, head_dim)
    raise ValueError(f"GatedSlotAttention: feature_map={name!r} is not one of {GSA_FEATURE_MAPS}")


class GatedSlotAttention(LinearMixer):
    """GSA token mixer (fla's ``GatedSlotAttention`` signature and parameter names).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        hidden_size, expand_k, expand_v, num_heads, num_kv_heads: widths (``key_dim = hidden_size * expand_k``,
            ``value_dim = hidden_size * expand_v``) and heads (``num_kv_heads`` < ``num_heads``: GQA).
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        num_slots: slots per head ``M`` (default: the per-head key width).
        elementwise_affine: of the output RMSNorm; norm_eps: accepted and unused, as in fla 0.6.0, whose forward
            normalizes with eps 1e-5 (``FLA060_FUSED_OUTPUT_NORM_EPS``).
        gate_logit_normalizer: divides the log forget gates (larger: slower forgetting).
        feature_map: ``"swish"``, ``"relu"`` or ``"t2r"``, on q and k.
        use_output_gate, use_norm: accepted and stored (fla's layer uses neither).
        layer_idx: index in the cache (required with a cache).
        scale: of the slot scores ``q Hk`` (default 1, as in fla; ``None``: ``K ** -0.5``).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    cp_op = staticmethod(cp_gsa)
    chunk_op = staticmethod(chunk_gsa)
    recurrent_op = staticmethod(fused_recurrent_gsa)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        num_slots: int | None = None,
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        gate_logit_normalizer: int = 8,
        feature_map: str = "swish",
        use_output_gate: bool = False,
        use_norm: bool = True,
        layer_idx: int | None = None,
        scale: float | None = 1.0,
        **kwargs,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, layer_idx, None)
        self.num_slots = self.head_k_dim if num_slots is None else num_slots
        if not isinstance(self.num_slots, int) or self.num_slots <= 0:
            raise ValueError(f"GatedSlotAttention: num_slots must be a positive int, got {num_slots!r}")
        self.gate_logit_normalizer = gate_logit_normalizer
        self.use_output_gate, self.use_norm, self.scale = use_output_gate, use_norm, scale
        self.fuse_norm_and_gate = False
        self.feature_map = slot_feature_map(feature_map, self.head_k_dim)
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias)
        self.f_proj = nn.Linear(hidden_size, self.num_kv_heads * self.num_slots, bias=False)
        affine, eps = bool(elementwise_affine), FLA060_FUSED_OUTPUT_NORM_EPS
        self.g_norm = RMSNorm(self.value_dim, elementwise_affine=affine, eps=eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_slots={self.num_slots}"

    def feature_maps(self, step, q, k, v):
        """The feature map on q and k (at their own heads)."""
        return self.feature_map(q), self.feature_map(k), v

    def mix(self, step, q, k, v):
        """``silu(v)``, the slot gates ``g`` and writes ``s = 1 - exp(g)`` -> chunk / recurrent GSA."""
        g = F.logsigmoid(self.heads(self.f_proj(step.x), self.num_slots)) / self.gate_logit_normalizer
        s = (1 - g.exp()).to(q.dtype)
        return self.run(step, q, k, F.silu(v), s, g, scale=self.scale)

    def norm_and_gate(self, step, o):
        """``RMSNorm(silu(o))`` over all heads together: ``[.., H, V] -> [.., value_dim]``."""
        return self.g_norm(F.silu(o.flatten(-2)))


__all__ = ["GSA_FEATURE_MAPS", "GatedSlotAttention", "slot_feature_map"]
