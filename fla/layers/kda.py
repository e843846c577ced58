"""Kimi Delta Attention (KDA; Kimi Linear, https://arxiv.org/abs/2510.26692), parameter-compatible with fla.

Per value head ``h`` (``num_v_heads`` of them; each q/k head serves ``num_v_heads / num_heads`` value heads)
and key channel ``c``::

    g_t    = -exp(A_log_h) * softplus(f_proj(x_t)_{h,c} + dt_bias_{h,c})     (log decay per key channel, <= 0;
             lower_bound * sigmoid(exp(A_log_h) * (f_proj(x_t) + dt_bias)) when ``lower_bound`` is set)
    beta_t = sigmoid(b_proj(x_t)_h)                                          (doubled with allow_neg_eigval)
    S'     = diag(exp(g_t)) S_{t-1}
    S_t    = S' - beta_t k_t (k_t^T S') + beta_t k_t v_t^T,      o_t = q_t^T S_t / sqrt(head_dim)
    out_t  = o_proj(o_norm(o_t, g_proj(x_t)))                              (RMSNorm gated by sigmoid)

``f_proj`` and ``g_proj`` are low-rank (``hidden -> head_v_dim -> ...``; ``g_proj``'s second map has a bias).
q, k and v pass SiLU short convolutions (or SiLU alone without ``use_short_conv``); q and k are L2-normalized
inside the op. ``A_log`` and ``dt_bias`` are initialized as in Mamba 2 (``A_log = 0`` with ``safe_gate``).

Training and prefill run :func:`fla.ops.kda.chunk_kda`; decoding (at most 64 tokens outside training) runs
:func:`fla.ops.kda.fused_recurrent_kda`, both with the gate and beta sigmoid in the op. The cached state is
``[N, num_v_heads, head_dim, head_v_dim]`` float32 (fla 0.6.0 keeps it V-first; checkpoints do not contain
it). Batches, padding, the cache and ``forward``: see :mod:`fla.layers.linear_mixer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fla.layers.delta_net import DELTA_MODES, DeltaMixer
from fla.layers.gated_deltanet import A_INIT_RANGE, DT_FLOOR, DT_RANGE
from fla.layers.linear_mixer import split_heads
from fla.modules.gated_norm import FusedRMSNormGated
from fla.ops.kda import chunk_kda, fused_recurrent_kda


class KimiDeltaAttention(DeltaMixer):
    """KDA token mixer (see the module docstring).

    Args:
        hidden_size: model width.
        expand_v: ``head_v_dim = head_dim * expand_v`` (default 1).
        head_dim: q / k head size (default 128).
        num_heads: q / k heads (default 16).
        num_v_heads: value heads, a multiple of ``num_heads`` (default ``num_heads``).
        mode: ``"chunk"`` (default) or ``"fused_recurrent"`` for training / prefill.
        use_short_conv, conv_size, conv_bias: SiLU short convolutions on q, k, v.
        allow_neg_eigval: ``beta`` in ``(0, 2)``.
        safe_gate: fla's bounded-gate switch (needs ``lower_bound`` in ``[-5, 0)``; ``A_log`` starts at 0).
        lower_bound: the sigmoid gate form, bounded below by it (``None``: the softplus form).
        norm_eps: of ``o_norm``.
        layer_idx: index in the cache (required when a cache is used).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_kda)
    recurrent_op = staticmethod(fused_recurrent_kda)

    def __init__(
        self,
        hidden_size: int = 2048,
        expand_v: float = 1,
        head_dim: int = 128,
        num_heads: int = 16,
        num_v_heads: int | None = None,
        mode: str = "chunk",
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        safe_gate: bool = False,
        lower_bound: float | None = None,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        **kwargs,
    ):
        super().__init__()
        self.check_mode(mode, DELTA_MODES)
        if lower_bound is not None and not lower_bound < 0:
            raise ValueError(f"KimiDeltaAttention: lower_bound={lower_bound} must be negative (a log decay bound)")
        if safe_gate and (lower_bound is None or not -5 <= lower_bound < 0):
            raise ValueError(f"KimiDeltaAttention: safe_gate=True needs lower_bound in [-5, 0), got {lower_bound}")
        self.set_dims(hidden_size, expand_v, head_dim, num_heads, num_v_heads)
        self.allow_neg_eigval, self.safe_gate, self.lower_bound = allow_neg_eigval, safe_gate, lower_bound
        self.layer_idx = layer_idx
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias, activate_without_conv=True)
        self.gate_dim = self.num_v_heads * self.head_k_dim
        # low-rank gates: hidden -> head_v_dim -> per value head and key channel (f) / value channel (g)
        self.f_proj = nn.Sequential(
            nn.Linear(hidden_size, self.head_v_dim, bias=False), nn.Linear(self.head_v_dim, self.gate_dim, bias=False)
        )
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(self.gate_dim, dtype=torch.float32))
        self.A_log._no_weight_decay = self.dt_bias._no_weight_decay = True
        self.g_proj = nn.Sequential(
            nn.Linear(hidden_size, self.head_v_dim, bias=False), nn.Linear(self.head_v_dim, self.value_dim, bias=True)
        )
        self.use_gate = True
        self.o_norm = FusedRMSNormGated(self.head_v_dim, eps=norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.reset_parameters()

    def set_dims(self, hidden_size: int, expand_v: float, head_dim: int, num_heads: int, num_v_heads: int | None):
        """Head counts and widths (the attributes :class:`LinearMixer` builds from); raise on bad sizes."""
        num_v_heads = num_heads if num_v_heads is None else num_v_heads
        head_v_dim = head_dim * expand_v
        if abs(head_v_dim - round(head_v_dim)) > 1e-6:
            raise ValueError(f"KimiDeltaAttention: head_dim * expand_v = {head_dim} * {expand_v} is not an integer")
        if num_heads <= 0 or num_v_heads <= 0 or num_v_heads % num_heads != 0:
            raise ValueError(
                f"KimiDeltaAttention: num_v_heads={num_v_heads} is not a multiple of num_heads={num_heads}"
            )
        self.hidden_size = hidden_size
        self.num_heads, self.num_v_heads, self.head_dim = num_heads, num_v_heads, head_dim
        self.head_k_dim, self.head_v_dim = head_dim, round(head_v_dim)
        self.key_dim, self.value_dim = num_heads * head_dim, num_v_heads * self.head_v_dim
        self.key_dim_per_group, self.value_dim_per_group = self.key_dim, self.value_dim

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``exp(A_log) ~ U(1, 16)`` (``A_log = 0`` with ``safe_gate``); ``softplus(dt_bias)`` log-uniform in
        ``[1e-3, 1e-1]``. Parameters already loaded by transformers (``_is_hf_initialized``) are kept; meta
        tensors are skipped."""
        if self.A_log.device.type == "meta":
            return
        if not getattr(self.A_log, "_is_hf_initialized", False):
            if self.safe_gate:
                self.A_log.zero_()
            else:
                self.A_log.copy_(torch.empty_like(self.A_log).uniform_(*A_INIT_RANGE).log())
        if not getattr(self.dt_bias, "_is_hf_initialized", False):
            lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
            dt = (torch.rand_like(self.dt_bias) * (hi - lo) + lo).exp().clamp_min(DT_FLOOR)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_v_heads={self.num_v_heads}, lower_bound={self.lower_bound}"

    @property
    def op_heads(self) -> int:
        return self.num_v_heads  # each q / k head is repeated for its value heads

    def mix(self, step, q, k, v):
        """Raw gate ``f_proj(x)`` ``[.., HV, K]`` and beta logits ``b_proj(x)`` -> chunk / recurrent KDA, which
        apply the gate (``A_log``, ``dt_bias``, ``lower_bound``) and the beta sigmoid."""
        g = split_heads(self.f_proj(step.x), self.head_k_dim)
        beta = self.b_proj(step.x)
        return self.run(
            step, q, k, v, g, beta, A_log=self.A_log, dt_bias=self.dt_bias, use_qk_l2norm_in_kernel=True,
            use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True, allow_neg_eigval=self.allow_neg_eigval,
            lower_bound=self.lower_bound,
        )  # fmt: skip

    def norm_and_gate(self, step, o: torch.Tensor) -> torch.Tensor:
        """``o [.., HV, V]`` -> ``o_norm(o, g_proj(x)) [.., HV * V]`` (RMSNorm gated by a sigmoid)."""
        return self.o_norm(o, split_heads(self.g_proj(step.x), self.head_v_dim)).flatten(-2)


__all__ = ["KimiDeltaAttention"]
