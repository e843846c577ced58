"""Gated DeltaProduct (Siems et al. 2025, https://arxiv.org/abs/2502.10297), parameter-compatible with fla.

Gated DeltaNet with ``n = num_householder`` delta-rule (generalized Householder) steps per token: per value head::

    g_t     = -exp(A_log_h) * softplus(a_proj(x_t)_h + dt_bias_h)       (use_forget_gate; else no decay)
    beta_tj = sigmoid(b_proj(x_t)_{j, h})                               (doubled with allow_neg_eigval)
    S <- exp(g_t) S;  then for j = 1..n:  S <- S - beta_tj k_tj (k_tj^T S) + beta_tj k_tj v_tj^T
    o_t     = q_t^T S / sqrt(head_dim),    out_t = o_proj(o_norm(o_t, g_proj(x_t)))

``k_proj`` / ``v_proj`` / ``b_proj`` (and their short convolutions) produce all ``n`` steps at once, laid out
``(n, heads, dim)`` as fla does; q, k are L2-normalized inside the op. Training and prefill run
:func:`fla.ops.gated_delta_product.chunk_gated_delta_product`, decoding
:func:`fla.ops.gated_delta_product.fused_recurrent_gated_delta_product` (both the gated delta rule over the
``n * T`` micro-steps). The cached state is ``[N, num_v_heads, head_dim, head_v_dim]`` float32.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.context_parallel import cp_chunk_op
from fla.layers.comba import reset_decay_gate
from fla.layers.delta_net import DELTA_MODES, DeltaMixer
from fla.layers.gated_deltanet import GatedDeltaNet, gdn_gate
from fla.ops.gated_delta_product import chunk_gated_delta_product, fused_recurrent_gated_delta_product


class GatedDeltaProduct(DeltaMixer):
    """Gated DeltaProduct token mixer (see the module docstring).

    Args:
        hidden_size, expand_v, head_dim, num_heads, num_v_heads, mode, use_short_conv, conv_size, conv_bias,
            layer_idx, norm_eps: as :class:`fla.layers.GatedDeltaNet` (fla's defaults: 2048, 2, 256, 6).
        use_output_gate: ``g_proj`` and a swish-gated ``o_norm`` (else a plain RMSNorm).
        use_forget_gate: the per-token decay (``a_proj``, ``A_log``, ``dt_bias``).
        allow_neg_eigval: ``beta`` in ``(0, 2)``.
        num_householder: delta-rule steps per token (``n >= 1``).

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_gated_delta_product)
    recurrent_op = staticmethod(fused_recurrent_gated_delta_product)

    def __init__(
        self,
        hidden_size: int = 2048,
        expand_v: float = 2,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        mode: str = "chunk",
        use_output_gate: bool = True,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        use_forget_gate: bool = True,
        allow_neg_eigval: bool = True,
        num_householder: int = 2,
        **kwargs,
    ):
        super().__init__()
        if isinstance(num_householder, bool) or not isinstance(num_householder, int) or num_householder < 1:
            raise ValueError(f"GatedDeltaProduct: num_householder={num_householder!r} must be an int >= 1")
        self.check_mode(mode, DELTA_MODES)
        GatedDeltaNet.set_dims(self, hidden_size, expand_v, head_dim, num_heads, num_v_heads)
        n = self.num_householder = num_householder
        self.use_forget_gate, self.allow_neg_eigval, self.use_output_gate = (
            use_forget_gate,
            allow_neg_eigval,
            use_output_gate,
        )
        self.layer_idx = layer_idx
        # k and v (and their convolutions) carry all n steps: [.., n * width], laid out (n, heads, dim)
        self.key_dim_per_group, self.value_dim_per_group = n * self.key_dim, n * self.value_dim
        self.build_qkv(hidden_size, use_short_conv, conv_size, conv_bias, activate_without_conv=True)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads * n, bias=False)
        if use_forget_gate:
            self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(self.num_v_heads, dtype=torch.float32))
            self.dt_bias = nn.Parameter(torch.empty(self.num_v_heads, dtype=torch.float32))
            self.A_log._no_weight_decay = self.dt_bias._no_weight_decay = True
        self.build_o_norm(hidden_size, use_output_gate, norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The decay parameters as fla's Gated DeltaProduct (:func:`fla.layers.comba.reset_decay_gate`)."""
        if self.use_forget_gate:
            reset_decay_gate(self)

    @property
    def op_heads(self) -> int:
        return self.num_v_heads

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_v_heads={self.num_v_heads}, num_householder={self.num_householder}"

    def feature_maps(self, step, q, k, v):
        """``k [.., T, n * H, K] -> [.., T * n, H, K]``, likewise ``v`` (token ``t``'s step ``j`` at ``t * n + j``)."""
        n = self.num_householder
        k = k.unflatten(-2, (n, -1)).flatten(-4, -3)
        v = v.unflatten(-2, (n, -1)).flatten(-4, -3)
        return q, k, v

    def mix(self, step, q, k, v):
        """Decays, per-step ``beta`` -> chunk / recurrent Gated DeltaProduct."""
        n = self.num_householder
        g = gdn_gate(self.a_proj(step.x), self.A_log, self.dt_bias) if self.use_forget_gate else None
        beta = self.b_proj(step.x).sigmoid()
        if self.allow_neg_eigval:
            beta = beta * 2.0
        if step.cp is not None:  # the micro-steps as an axis of their token, so that the slices stay whole tokens
            k, v = k.unflatten(1, (-1, n)), v.unflatten(1, (-1, n))  # [.., T, n, H(V), K / V]
            gates = (beta.unflatten(-1, (n, -1)), *(() if g is None else (g,)))  # [.., T, n, HV], [.., T, HV]
            return cp_chunk_op(_by_token, step.cp, q, k, v, *gates, cu_seqlens=step.cu_seqlens,
                               use_qk_l2norm_in_kernel=True)  # fmt: skip
        beta = beta.unflatten(-1, (n, -1)).flatten(-3, -2)  # [.., T, n * HV] -> [.., T * n, HV]
        return self.run(step, q, k, v, g, beta, num_householder=n, use_qk_l2norm_in_kernel=True)


def _by_token(q, k, v, beta, *g, **options):
    """:func:`chunk_gated_delta_product` with the micro-steps as an axis of their token: ``k [B, T, n, H, K]``,
    ``v [B, T, n, HV, V]``, ``beta [B, T, n, HV]``, ``g`` (optional) ``[B, T, HV]`` (the form
    :func:`fla.context_parallel.cp_chunk_op` slices by tokens)."""
    n = k.shape[2]
    return chunk_gated_delta_product(q, k.flatten(1, 2), v.flatten(1, 2), g[0] if g else None, beta.flatten(1, 2), n,
                                     **options)  # fmt: skip


__all__ = ["GatedDeltaProduct"]
