"""DeltaNet (Schlag et al. 2021; Yang et al. 2024, https://arxiv.org/abs/2406.06484), parameter-compatible with fla.

Per head, with ``beta_t = sigmoid(b_proj(x_t))`` (or 1 without ``use_beta``; doubled with
``allow_neg_eigval``) and keys normalized to unit length::

    S_t   = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T,      o_t = q_t^T S_t / sqrt(d_k)
    out_t = o_proj(o_norm(o_t [, g_proj(x_t)]))

Feature maps (as in fla 0.6.0): q and k go through the short convolution with SiLU when
``qk_activation == "silu"`` (without an activation otherwise, then ``relu`` / ``elu + 1`` /
identity), v through a SiLU short convolution; without short convolutions the same activations
act on the projections. ``qk_norm="l2"`` normalizes q and k inside the op, ``"sum"`` divides
them by their L1 norm. ``o_norm`` is a per-head RMSNorm, gated by ``swish(g_proj(x))`` with
``use_gate``.

Training and prefill run :func:`fla.ops.delta_rule.chunk_delta_rule`; decoding (at most 64 tokens
outside training) runs :func:`fla.ops.delta_rule.fused_recurrent_delta_rule`. Batches, padding,
the cache and ``forward``: see :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.linear_mixer import LinearMixer, MixerStep, split_heads
from fla.modules.gated_norm import FusedRMSNormGated
from fla.modules.norm import RMSNorm
from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule

DELTA_MODES = ("chunk", "fused_recurrent")
QK_ACTIVATIONS = ("silu", "relu", "elu", "identity")
QK_NORMS = ("l2", "sum")


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    """``elu(x) + 1``: a positive feature map."""
    return F.elu(x) + 1.0


def sum_norm(x: torch.Tensor) -> torch.Tensor:
    """Divide by the L1 norm over the last dim (clamped at 1e-6), in the input dtype."""
    return F.normalize(x, p=1, dim=-1, eps=1e-6)


_QK_FEATURE_MAPS = {"relu": F.relu, "elu": elu_p1}


class DeltaMixer(LinearMixer):
    """What DeltaNet and Gated DeltaNet share on top of :class:`LinearMixer`: the ``o_norm`` output."""

    use_gate: bool

    def build_o_norm(self, hidden_size: int, use_gate: bool, norm_eps: float, gate_activation: str = "swish") -> None:
        """``g_proj`` + gated per-head RMSNorm ``o_norm`` with ``use_gate``, else a plain RMSNorm; ``o_proj``."""
        self.use_gate = use_gate
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.o_norm = FusedRMSNormGated(self.head_v_dim, eps=norm_eps, activation=gate_activation)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def norm_and_gate(self, step: MixerStep, o: torch.Tensor) -> torch.Tensor:
        """``o [.., H, V]`` -> ``o_norm(o [, g]) [.., H * V]``."""
        if self.use_gate:
            return self.o_norm(o, split_heads(self.g_proj(step.x), self.head_v_dim)).flatten(-2)
        return self.o_norm(o).flatten(-2)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, num_heads={self.num_heads}, head_k_dim={self.head_k_dim}, "
            f"head_v_dim={self.head_v_dim}, use_gate={self.use_gate}, use_short_conv={self.use_short_conv}"
        )


class DeltaNet(DeltaMixer):
    """DeltaNet token mixer (see the module docstring).

    Args:
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        hidden_size: model width (``d_model`` is an alias, as in fla).
        expand_k, expand_v: key / value widths as multiples of ``hidden_size`` (default 1 / 1).
        num_heads: heads of q, k, v.
        use_beta: learn ``beta_t = sigmoid(b_proj(x_t))`` per head (else ``beta = 1``).
        use_gate: output gate ``g_proj`` (swish, fused into ``o_norm``).
        use_short_conv, conv_size, conv_bias: short convolutions on q, k, v.
        allow_neg_eigval: ``beta`` in ``(0, 2)``.
        qk_activation: ``"silu"`` (default), ``"relu"``, ``"elu"`` (``elu + 1``) or ``"identity"``.
        qk_norm: ``"l2"`` (default) or ``"sum"``.
        norm_eps: of ``o_norm``.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_delta_rule)
    recurrent_op = staticmethod(fused_recurrent_delta_rule)

    def __init__(
        self,
        mode: str = "chunk",
        d_model: int | None = None,
        hidden_size: int = 1024,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        num_heads: int = 4,
        use_beta: bool = True,
        use_gate: bool = False,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        allow_neg_eigval: bool = False,
        layer_idx: int | None = None,
        qk_activation: str = "silu",
        qk_norm: str = "l2",
        norm_eps: float = 1e-5,
        **kwargs,
    ):
        super().__init__()
        if qk_activation not in QK_ACTIVATIONS:
            raise ValueError(f"DeltaNet: qk_activation={qk_activation!r} is not one of {QK_ACTIVATIONS}")
        if qk_norm not in QK_NORMS:
            raise ValueError(f"DeltaNet: qk_norm={qk_norm!r} is not one of {QK_NORMS}")
        hidden_size = d_model if d_model is not None else hidden_size
        self.setup(mode, hidden_size, expand_k, expand_v, num_heads, None, layer_idx, modes=DELTA_MODES)
        self.use_beta, self.allow_neg_eigval = use_beta, allow_neg_eigval
        self.qk_activation, self.qk_norm = qk_activation, qk_norm
        qk_act = "silu" if qk_activation == "silu" else None
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias, qk_act, activate_without_conv=True)
        if use_beta:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.build_o_norm(hidden_size, use_gate, norm_eps)

    def feature_maps(self, step: MixerStep, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """``relu`` / ``elu + 1`` on q and k (``silu`` came with the projections), then ``qk_norm="sum"``."""
        if self.qk_activation in _QK_FEATURE_MAPS:
            fn = _QK_FEATURE_MAPS[self.qk_activation]
            q, k = fn(q), fn(k)
        if self.qk_norm == "sum":
            q, k = sum_norm(q), sum_norm(k)
        return q, k, v

    def mix(self, step, q, k, v):
        """``beta = sigmoid(b_proj(x))`` (or none) -> chunk / recurrent delta rule (``qk_norm="l2"`` in the op)."""
        beta = self.b_proj(step.x).sigmoid() if self.use_beta else None
        l2 = self.qk_norm == "l2"
        return self.run(step, q, k, v, beta, use_qk_l2norm_in_kernel=l2, allow_neg_eigval=self.allow_neg_eigval)


__all__ = ["DELTA_MODES", "DeltaMixer", "DeltaNet", "elu_p1", "sum_norm"]
