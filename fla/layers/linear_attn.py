"""Linear attention (Katharopoulos et al. 2020, https://arxiv.org/abs/2006.16236) with fla's feature maps,
parameter-compatible with fla 0.6.0's ``LinearAttention``.

Per head, with feature maps ``phi_q``, ``phi_k`` (:mod:`fla.modules.feature_map`, one map shared by all heads)::

    q_t = phi_q(W_q x_t),  k_t = phi_k(W_k x_t)      (then q / sum(q), k / sum(k) with norm_q / norm_k)
    S_t = S_{t-1} + k_t^T v_t,      o_t = q_t S_t / sqrt(d_phi)
    do_feature_map_norm:  o_t <- o_t / (q_t . sum_{s <= t} k_s / sqrt(d_phi))
    out_t = o_proj(RMSNorm(o_t))                     (per head; output_norm="identity": no norm)

``d_phi`` is the feature width (:func:`feature_dim`). There is no output gate and no short convolution.
Training and prefill run :func:`fla.ops.linear_attn.chunk_linear_attn`; decoding (at most 64 tokens outside
training) and ``mode="fused_recurrent"`` :func:`fla.ops.linear_attn.fused_recurrent_linear_attn`. With
``do_feature_map_norm`` the cached state is the pair ``(S [N, H, K, V], z [N, 1, H, K])``. Batches, padding,
the cache and ``forward``: see :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.context_parallel import cp_linear_attn
from fla.layers.linear_mixer import LinearMixer
from fla.modules.feature_map import DPFPFeatureMap, HadamardFeatureMap, HedgehogFeatureMap, T2RFeatureMap, elu_p1
from fla.modules.norm import RMSNorm
from fla.ops.linear_attn import chunk_linear_attn, fused_recurrent_linear_attn

LINEAR_ATTN_MODES = ("chunk", "fused_chunk", "fused_recurrent")  # fla's; "fused_chunk" runs the chunk op
_LEARNED = {
    "hedgehog": HedgehogFeatureMap,
    "t2r": T2RFeatureMap,
    "elementwise_product": HadamardFeatureMap,
}
_FIXED = {"elu": lambda d: elu_p1, "relu": lambda d: nn.ReLU(), "identity": lambda d: nn.Identity()}
FEATURE_MAPS = (*_LEARNED, "dpfp", *_FIXED)
"""The ``feature_map`` names fla 0.6.0's LinearAttention accepts."""
OUTPUT_NORMS = ("rmsnorm", "identity")
QK_SUM_NORM_EPS = 1e-4


def feature_dim(feature_map: str, head_dim: int) -> int:
    """Width of ``feature_map``'s output for ``head_dim`` inputs (the key width the op sees)."""
    return {"hedgehog": 2 * head_dim, "dpfp": 2 * 4 * head_dim}.get(feature_map, head_dim)


class LinearAttention(LinearMixer):
    """Linear-attention token mixer.

    Args:
        mode: ``"chunk"`` (default), ``"fused_chunk"`` (runs the chunk op) or ``"fused_recurrent"``.
        hidden_size: model width.
        expand_k, expand_v: key / value widths as multiples of ``hidden_size`` (default 1 / 1).
        num_heads: query heads; num_kv_heads: key/value heads (default ``num_heads``).
        feature_map: one of :data:`FEATURE_MAPS` (default ``"elementwise_product"``:
            :class:`~fla.modules.feature_map.HadamardFeatureMap`), applied to q and k.
        tie_feature_map_qk: one learned map for q and k (``feature_map_q`` is ``feature_map_k``;
            hedgehog, t2r, elementwise_product).
        output_norm: ``"rmsnorm"`` (per head, parameter ``norm.weight``) or ``"identity"``.
        norm_q, norm_k: divide q / k by their sum over the feature dim (+ 1e-4) after the feature map.
        do_feature_map_norm: normalize the output by ``q_t . sum_{s <= t} k_s`` (the ops' ``normalize``).
        elementwise_affine, norm_eps: of the output RMSNorm.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True
    cp_op = staticmethod(cp_linear_attn)
    chunk_op = staticmethod(chunk_linear_attn)
    recurrent_op = staticmethod(fused_recurrent_linear_attn)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        num_heads: int = 8,
        num_kv_heads: int | None = None,
        feature_map: str = "elementwise_product",
        tie_feature_map_qk: bool = False,
        output_norm: str = "rmsnorm",
        norm_q: bool = False,
        norm_k: bool = False,
        do_feature_map_norm: bool = False,
        elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        **kwargs,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, layer_idx, modes=LINEAR_ATTN_MODES)
        for name, value, allowed in (
            ("feature_map", feature_map, FEATURE_MAPS),
            ("output_norm", output_norm, OUTPUT_NORMS),
        ):
            if value not in allowed:
                raise ValueError(f"LinearAttention: {name}={value!r} is not one of {allowed}")
        self.feature_map = feature_map
        self.tie_feature_map_qk = tie_feature_map_qk
        self.norm_q, self.norm_k = norm_q, norm_k
        self.do_feature_map_norm = do_feature_map_norm
        self.build_feature_maps(feature_map, tie_feature_map_qk)
        self.build_qkv(hidden_size, use_short_conv=False, conv_size=4, conv_bias=False)
        if output_norm == "rmsnorm":
            self.norm = RMSNorm(
                self.head_v_dim, elementwise_affine=elementwise_affine, eps=norm_eps, dtype=torch.float32
            )
        else:
            self.norm = nn.Identity()
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def build_feature_maps(self, feature_map: str, tie: bool) -> None:
        """``feature_map_q`` / ``feature_map_k`` (fla's names; the same module twice when tied)."""
        d = self.head_k_dim
        if feature_map in _LEARNED:
            make = _LEARNED[feature_map]
            self.feature_map_q = make(head_dim=d)
            self.feature_map_k = self.feature_map_q if tie else make(head_dim=d)
            if tie:  # one module under two names (fla's keys): saved once, as feature_map_q (transformers' tying)
                names = [n for n, _ in self.feature_map_q.named_parameters()]
                self._tied_weights_keys = {f"feature_map_k.{n}": f"feature_map_q.{n}" for n in names}
        elif feature_map == "dpfp":  # parameter free: tying changes nothing
            self.feature_map_q, self.feature_map_k = DPFPFeatureMap(head_dim=d), DPFPFeatureMap(head_dim=d)
        else:
            self.feature_map_q, self.feature_map_k = _FIXED[feature_map](d), _FIXED[feature_map](d)

    @property
    def feature_dim(self) -> int:
        """Per-head key width after the feature map (the op's ``K``)."""
        return feature_dim(self.feature_map, self.head_k_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, feature_map={self.feature_map!r}, normalize={self.do_feature_map_norm}"

    def feature_maps(self, step, q, k, v):
        """``phi_q(q)``, ``phi_k(k)`` (then the sum norms); per head vector, so before the kv heads are repeated."""
        q, k = self.feature_map_q(q), self.feature_map_k(k)
        if self.norm_q:
            q = q / (q.sum(-1, keepdim=True) + QK_SUM_NORM_EPS)
        if self.norm_k:
            k = k / (k.sum(-1, keepdim=True) + QK_SUM_NORM_EPS)
        return q, k, v

    def mix(self, step, q, k, v):
        """The (optionally normalized) linear-attention op on the mapped q, k."""
        return self.run(step, q, k, v, normalize=self.do_feature_map_norm)

    def norm_and_gate(self, step, o):
        """Per-head output norm, no gate: ``o [.., H, V]`` -> ``[.., H * V]``."""
        return self.norm(o).flatten(-2)


__all__ = ["FEATURE_MAPS", "LINEAR_ATTN_MODES", "LinearAttention", "feature_dim"]
