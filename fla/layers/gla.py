"""Gated Linear Attention (Yang et al. 2023, https://arxiv.org/abs/2312.06635), parameter-compatible with fla.

Per head, with a data-dependent decay on the key dimension::

    alpha_t = exp(logsigmoid(gk_proj(x_t)) / gate_logit_normalizer)      (optionally clamped from below)
    S_t     = diag(alpha_t) S_{t-1} + k_t^T v_t,      o_t = q_t S_t / sqrt(d_k)
    out_t   = o_proj(RMSNorm(o_t) * swish(g_proj(x_t)))

``gk_proj`` is low rank: ``Linear(hidden, gate_low_rank_dim) -> Linear(gate_low_rank_dim, key_dim_per_group,
bias)`` (parameters ``gk_proj.0.weight``, ``gk_proj.1.{weight,bias}``). Training and prefill run
:func:`fla.ops.gla.chunk_gla`; decoding (at most 64 tokens outside training) runs
:func:`fla.ops.gla.fused_recurrent_gla`. Batches, padding, the cache and ``forward``: see
:mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from fla.layers.linear_mixer import LinearMixer
from fla.ops.gla import chunk_gla, fused_recurrent_gla


class GatedLinearAttention(LinearMixer):
    """GLA token mixer.

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill (fla's
            ``"fused_chunk"`` runs the chunk op).
        hidden_size: model width.
        expand_k, expand_v: key / value widths as multiples of ``hidden_size`` (default 0.5 / 1).
        num_heads: query heads; num_kv_heads: key/value (and gate) heads (default ``num_heads``).
        feature_map: activation name applied to q and k (``None``: identity).
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        use_output_gate: ``g_proj`` output gate; gate_fn: its activation (``"swish"`` fuses with the norm).
        elementwise_affine, norm_eps: of the per-head output RMSNorm.
        gate_logit_normalizer: divides ``logsigmoid`` of the gate logits (default 16).
        gate_low_rank_dim: rank of ``gk_proj`` (default 16).
        clamp_min: lower bound of the log decays (``None``: none).
        fuse_norm: fuse the output norm and swish gate.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_gla)
    recurrent_op = staticmethod(fused_recurrent_gla)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        feature_map: str | None = None,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        use_output_gate: bool = True,
        gate_fn: str = "swish",
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        gate_logit_normalizer: int = 16,
        gate_low_rank_dim: int = 16,
        clamp_min: float | None = None,
        fuse_norm: bool = True,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, layer_idx, feature_map)
        self.gate_logit_normalizer = gate_logit_normalizer
        self.clamp_min = clamp_min
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias)
        self.gk_proj = nn.Sequential(
            nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
            nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True),
        )
        self.build_output(hidden_size, use_output_gate, gate_fn, fuse_norm, elementwise_affine, norm_eps)

    def feature_maps(self, step, q, k, v):
        return q, k, v  # as in fla 0.6.0, GLA's feature map acts after the kv heads are repeated: see mix

    def mix(self, step, q, k, v):
        """Log decays ``logsigmoid(gk_proj(x)) / gate_logit_normalizer`` (>= ``clamp_min``) -> chunk / recurrent GLA."""
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        gk = F.logsigmoid(self.heads(self.gk_proj(step.x), self.head_k_dim)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        return self.run(step, q, k, v, gk)


__all__ = ["GatedLinearAttention"]
