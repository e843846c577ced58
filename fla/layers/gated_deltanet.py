"""Gated DeltaNet (Yang et al. 2024, https://arxiv.org/abs/2412.06464), parameter-compatible with fla.

Per value head ``h`` (``num_v_heads`` of them; each q/k head serves ``num_v_heads / num_heads``
value heads, "grouped value attention")::

    g_t   = -exp(A_log_h) * softplus(a_proj(x_t)_h + dt_bias_h)            (log decay, <= 0)
    beta_t = sigmoid(b_proj(x_t)_h)                                         (doubled with allow_neg_eigval)
    S'    = exp(g_t) S_{t-1}
    S_t   = S' - beta_t k_t (k_t^T S') + beta_t k_t v_t^T,      o_t = q_t^T S_t / sqrt(head_dim)
    out_t = o_proj(o_norm(o_t, g_proj(x_t)))

q, k and v pass SiLU short convolutions (or SiLU alone without ``use_short_conv``); q and k are
L2-normalized inside the op. ``o_norm`` is a per-head RMSNorm, gated by ``output_gate_activation``
of ``g_proj(x)`` with ``use_gate`` (the default). ``A_log`` and ``dt_bias`` are initialized as in
Mamba 2 (see :meth:`GatedDeltaNet.reset_parameters`).

Training and prefill run :func:`fla.ops.gated_delta_rule.chunk_gated_delta_rule`; decoding (at most
64 tokens outside training) runs :func:`fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule`.
The cached state is ``[N, num_v_heads, head_dim, head_v_dim]`` float32 (fla 0.6.0 keeps it
transposed; checkpoints do not contain it). Batches, padding, the cache and ``forward``: see
:mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.delta_net import DELTA_MODES, DeltaMixer
from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

GATE_ACTIVATIONS = ("swish", "silu", "sigmoid")
A_INIT_RANGE = (1.0, 16.0)  # A = exp(A_log) ~ U(1, 16)
DT_RANGE, DT_FLOOR = (1e-3, 1e-1), 1e-4  # softplus(dt_bias) log-uniform in DT_RANGE, at least DT_FLOOR


def gdn_gate(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """Log decays ``-exp(A_log) * softplus(a + dt_bias)``: ``a [.., H]``, ``A_log, dt_bias [H]``.

    Computed in float32 at least (float64 inputs stay float64).
    """
    dtype = torch.promote_types(a.dtype, torch.float32)
    return -A_log.to(dtype).exp() * F.softplus(a.to(dtype) + dt_bias.to(dtype))


class GatedDeltaNet(DeltaMixer):
    """Gated DeltaNet token mixer (see the module docstring).

    Args:
        hidden_size: model width.
        expand_v: ``head_v_dim = head_dim * expand_v`` (default 2).
        head_dim: q / k head size (default 256).
        num_heads: q / k heads (default 6).
        num_v_heads: value heads, a multiple of ``num_heads`` (default ``num_heads``).
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        use_gate: gated output norm with ``g_proj``.
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        allow_neg_eigval: ``beta`` in ``(0, 2)``.
        norm_eps: of ``o_norm``.
        output_gate_activation: ``"swish"`` / ``"silu"`` (the same) or ``"sigmoid"``.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_gated_delta_rule)
    recurrent_op = staticmethod(fused_recurrent_gated_delta_rule)

    def __init__(
        self,
        hidden_size: int = 2048,
        expand_v: float = 2,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        mode: str = "chunk",
        use_gate: bool = True,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        output_gate_activation: str = "swish",
        **kwargs,
    ):
        super().__init__()
        self.check_mode(mode, DELTA_MODES)
        if output_gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(
                f"GatedDeltaNet: output_gate_activation={output_gate_activation!r} is not one of {GATE_ACTIVATIONS}"
            )
        self.set_dims(hidden_size, expand_v, head_dim, num_heads, num_v_heads)
        self.allow_neg_eigval = allow_neg_eigval
        self.layer_idx = layer_idx
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias, activate_without_conv=True)
        self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(self.num_v_heads, dtype=torch.float32))
        self.A_log._no_weight_decay = self.dt_bias._no_weight_decay = True
        self.build_o_norm(hidden_size, use_gate, norm_eps, output_gate_activation)
        self.reset_parameters()

    def set_dims(self, hidden_size: int, expand_v: float, head_dim: int, num_heads: int, num_v_heads: int | None):
        """Head counts and widths (the attributes :class:`LinearMixer` builds from); raise on bad sizes."""
        num_v_heads = num_heads if num_v_heads is None else num_v_heads
        head_v_dim = head_dim * expand_v
        if abs(head_v_dim - round(head_v_dim)) > 1e-6:
            raise ValueError(f"GatedDeltaNet: head_dim * expand_v = {head_dim} * {expand_v} is not an integer")
        if num_heads <= 0 or num_v_heads <= 0 or num_v_heads % num_heads != 0:
            raise ValueError(f"GatedDeltaNet: num_v_heads={num_v_heads} is not a multiple of num_heads={num_heads}")
        self.hidden_size = hidden_size
        self.num_heads, self.num_v_heads, self.head_dim = num_heads, num_v_heads, head_dim
        self.head_k_dim, self.head_v_dim = head_dim, round(head_v_dim)
        self.key_dim, self.value_dim = num_heads * head_dim, num_v_heads * self.head_v_dim
        self.key_dim_per_group, self.value_dim_per_group = self.key_dim, self.value_dim

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Mamba 2's init: ``exp(A_log) ~ U(1, 16)``; ``softplus(dt_bias)`` log-uniform in ``[1e-3, 1e-1]``.

        Parameters already loaded by transformers (``_is_hf_initialized``) are kept; meta tensors are skipped.
        """
        if self.A_log.device.type == "meta":
            return
        if not getattr(self.A_log, "_is_hf_initialized", False):
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(*A_INIT_RANGE).log())
        if not getattr(self.dt_bias, "_is_hf_initialized", False):
            lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
            dt = (torch.rand_like(self.dt_bias) * (hi - lo) + lo).exp().clamp_min(DT_FLOOR)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_v_heads={self.num_v_heads}"

    @property
    def op_heads(self) -> int:
        return self.num_v_heads  # each q / k head is repeated for its value heads

    def mix(self, step, q, k, v):
        """Log decays :func:`gdn_gate`, ``beta = sigmoid(b_proj(x))`` -> chunk / recurrent gated delta rule."""
        g = gdn_gate(self.a_proj(step.x), self.A_log, self.dt_bias)
        beta = self.b_proj(step.x).sigmoid()
        return self.run(step, q, k, v, g, beta, use_qk_l2norm_in_kernel=True, allow_neg_eigval=self.allow_neg_eigval)


__all__ = ["GATE_ACTIVATIONS", "GatedDeltaNet", "gdn_gate"]
