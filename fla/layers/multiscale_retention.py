"""Multi-scale retention (RetNet, Sun et al. 2023, https://arxiv.org/abs/2307.08621), parameter-compatible with fla.

Per head ``h`` with a fixed decay ``gamma_h = 1 - 2^(-5-h)`` and rotary positions on q and k::

    S_t   = gamma_h S_{t-1} + k_t^T v_t,      o_t = q_t S_t / sqrt(d_k)
    out_t = o_proj(RMSNorm(o_t) * swish(g_proj(x_t)))

The rotary tables (``rotary``) are buffers, not parameters. Training and prefill run
:func:`fla.ops.retention.chunk_retention` (called as simple GLA with the decays of this module's
heads); decoding (at most 64 tokens outside training) runs
:func:`fla.ops.retention.fused_recurrent_retention`. Batches, padding, the cache and
``forward``: see :mod:`fla.layers.linear_mixer`.

Positions: every packed / unpadded sequence starts at 0; after a cache, new tokens continue at
the number of real tokens seen in their row (so left-padded rows match their unpadded forward).
``position_ids`` are ignored (as in fla): retention only depends on position differences, and the
cached state fixes the offset.
"""

from __future__ import annotations

import torch

from fla.layers.linear_mixer import LinearMixer, MixerStep
from fla.modules.rotary import RotaryEmbedding
from fla.ops.retention import retention_log_decays
from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla

MAX_HEAD_K_DIM = 256


class MultiScaleRetention(LinearMixer):
    """RetNet token mixer.

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill (fla's
            ``"fused_chunk"`` / ``"parallel"`` run the chunk op).
        hidden_size: model width.
        expand_k, expand_v: key / value widths as multiples of ``hidden_size`` (default 1 / 2).
        num_heads: query heads; num_kv_heads: key/value heads (default ``num_heads``).
        feature_map: activation name applied to q and k (``None``: identity).
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        use_output_gate: ``g_proj`` output gate; gate_fn: its activation (``"swish"`` fuses with the norm).
        elementwise_affine, norm_eps: of the per-head output RMSNorm.
        fuse_norm: fuse the output norm and swish gate.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_simple_gla)  # chunk_retention / fused_recurrent_retention with this
    recurrent_op = staticmethod(fused_recurrent_simple_gla)  # module's head decays (see mix)

    def __init__(
        self,
        mode: str = "chunk",
        hidden_size: int = 1024,
        expand_k: float = 1.0,
        expand_v: float = 2.0,
        num_heads: int = 8,
        num_kv_heads: int | None = None,
        feature_map: str | None = None,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        use_output_gate: bool = True,
        gate_fn: str = "swish",
        elementwise_affine: bool | None = True,
        norm_eps: float = 1e-5,
        fuse_norm: bool = True,
        layer_idx: int | None = None,
        **kwargs,
    ):
        super().__init__()
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, layer_idx, feature_map)
        if self.head_k_dim > MAX_HEAD_K_DIM:
            raise ValueError(f"MultiScaleRetention: head_k_dim={self.head_k_dim} exceeds {MAX_HEAD_K_DIM}")
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias)
        self.build_output(hidden_size, use_output_gate, gate_fn, fuse_norm, elementwise_affine, norm_eps)
        self.rotary = RotaryEmbedding(dim=self.head_k_dim)
        # Index of this module's first head among the layer's heads: RetNet's decay depends on it
        # (tensor parallelism gives each rank a slice of the heads and sets this offset).
        self.head_offset = 0

    def feature_maps(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """``feature_map`` on q and k, then rotary positions (see the module docstring)."""
        q, k, v = super().feature_maps(step, q, k, v)
        return *self.rotate(step, q, k), v

    def mix(self, step, q, k, v):
        """The fixed decays of this module's heads -> chunk / recurrent retention."""
        g_gamma = retention_log_decays(self.head_offset + q.shape[2], q.device)[self.head_offset :]
        return self.run(step, q, k, v, g_gamma=g_gamma)


__all__ = ["MultiScaleRetention"]
