"""Comba (Hu et al. 2025, https://arxiv.org/abs/2506.02475), parameter-compatible with fla.

A Gated DeltaNet whose erase key ``p`` is a per-head scaled copy of the key and whose query carries an output
correction. Per q/k head ``h`` (value heads grouped as in :class:`fla.layers.GatedDeltaNet`)::

    p_t    = k_t * sigmoid(decay_h)                      (use_inner_decay; else p_t = k_t)
    q_t   <- q_t - D_h * p_t                             (use_output_correction; D_h starts at correction_factor)
    g_t    = -exp(A_log_h) * softplus(a_proj(x_t)_h + dt_bias_h),   beta_t = sigmoid(b_proj(x_t)_h)
    S_t    = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T,   o_t = q_t^T S_t / sqrt(head_dim)
    out_t  = o_proj(o_norm(o_t, g_proj(x_t)))            (o_norm gated by sigmoid with use_output_gate)

q, k and p are L2-normalized inside the op (:func:`fla.ops.comba.chunk_comba` for training and prefill,
:func:`fla.ops.comba.fused_recurrent_comba` for decoding). ``A_log`` starts at ``log U(0, 16)`` (fla's Comba).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.context_parallel import cp_chunk_op
from fla.layers.gated_deltanet import GatedDeltaNet, gdn_gate
from fla.ops.comba import chunk_comba, fused_recurrent_comba

COMBA_A_RANGE = (0.0, 16.0)  # A = exp(A_log) ~ U(0, 16) in fla's Comba / Gated DeltaProduct


@torch.no_grad()
def reset_decay_gate(layer: nn.Module, a_range: tuple[float, float] = COMBA_A_RANGE) -> None:
    """Mamba 2's ``dt_bias`` init (:meth:`GatedDeltaNet.reset_parameters`) with ``exp(A_log) ~ U(a_range)``;
    parameters loaded by transformers (``_is_hf_initialized``) and meta tensors are left alone."""
    GatedDeltaNet.reset_parameters(layer)
    if layer.A_log.device.type != "meta" and not getattr(layer.A_log, "_is_hf_initialized", False):
        layer.A_log.copy_(torch.empty_like(layer.A_log).uniform_(*a_range).log())


class Comba(GatedDeltaNet):
    """Comba token mixer (see the module docstring).

    Args:
        hidden_size, expand_v, head_dim, num_heads, num_v_heads, mode, use_short_conv, conv_size, conv_bias,
            layer_idx, norm_eps: as :class:`fla.layers.GatedDeltaNet` (fla's defaults: 2048, 2, 256, 6).
        use_output_gate: ``g_proj`` and a sigmoid-gated ``o_norm`` (else a plain RMSNorm).
        use_output_correction: ``q - D * p`` with a learned ``D [num_heads]``.
        use_inner_decay: ``p = k * sigmoid(decay)`` with a learned ``decay [num_heads]`` (else ``p = k``).
        correction_factor: initial value of ``D``.

    Shapes: ``hidden_states [B, T, hidden_size] -> [B, T, hidden_size]``.
    """

    supports_context_parallel = True

    chunk_op = staticmethod(chunk_comba)
    recurrent_op = staticmethod(fused_recurrent_comba)

    def __init__(
        self,
        hidden_size: int = 2048,
        expand_v: float = 2,
        head_dim: int = 256,
        num_heads: int = 6,
        num_v_heads: int | None = None,
        mode: str = "chunk",
        use_short_conv: bool = True,
        use_output_gate: bool = True,
        use_output_correction: bool = True,
        use_inner_decay: bool = True,
        correction_factor: float = 1.0,
        conv_size: int = 4,
        conv_bias: bool = False,
        layer_idx: int | None = None,
        norm_eps: float = 1e-5,
        **kwargs,
    ):
        super().__init__(
            hidden_size=hidden_size, expand_v=expand_v, head_dim=head_dim, num_heads=num_heads,
            num_v_heads=num_v_heads, mode=mode, use_gate=use_output_gate, use_short_conv=use_short_conv,
            conv_size=conv_size, conv_bias=conv_bias, layer_idx=layer_idx, norm_eps=norm_eps,
            output_gate_activation="sigmoid",
        )  # fmt: skip
        self.use_output_gate = use_output_gate
        self.use_output_correction, self.use_inner_decay = use_output_correction, use_inner_decay
        self.correction_factor = float(correction_factor)
        if use_inner_decay:
            self.decay = nn.Parameter(torch.ones(num_heads))
        if use_output_correction:
            self.D = nn.Parameter(torch.full((num_heads,), self.correction_factor))
            self.D._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``A_log``, ``dt_bias`` as :func:`reset_decay_gate`; ``decay = 1``, ``D = correction_factor``."""
        reset_decay_gate(self)
        for name, value in (("decay", 1.0), ("D", getattr(self, "correction_factor", 1.0))):
            param = getattr(self, name, None)
            if param is not None and param.device.type != "meta" and not getattr(param, "_is_hf_initialized", False):
                param.fill_(value)

    def feature_maps(self, step, q, k, v):
        """``p = k * sigmoid(decay)`` (kept for :meth:`mix`) and the corrected ``q - D * p``, per q/k head."""
        p = (k * self.decay[:, None].sigmoid()).to(k.dtype) if self.use_inner_decay else k
        if self.use_output_correction:
            q = (q - self.D[:, None] * p).to(q.dtype)
        step.extras["p"] = p
        return q, k, v

    def mix(self, step, q, k, v):
        """Log decays, ``beta = sigmoid(b_proj(x))`` -> :func:`chunk_comba` / :func:`fused_recurrent_comba`."""
        p = self.expand(step.extras.pop("p"))
        g = gdn_gate(self.a_proj(step.x), self.A_log, self.dt_bias)
        beta = self.b_proj(step.x).sigmoid()
        if step.cp is not None:  # the chunk op's order (q, k, v, p, g, beta); the recurrent one takes p before v
            return cp_chunk_op(self.chunk_op, step.cp, q, k, v, p, g, beta, cu_seqlens=step.cu_seqlens,
                               use_qk_l2norm_in_kernel=True)  # fmt: skip
        op = self.recurrent_op if self.use_recurrent(step) else self.chunk_op
        return op(
            q=q, k=k, v=v, p=p, g=g, beta=beta, initial_state=step.slot("recurrent_state"),
            output_final_state=step.store, cu_seqlens=step.cu_seqlens, use_qk_l2norm_in_kernel=True,
        )  # fmt: skip


__all__ = ["COMBA_A_RANGE", "Comba", "reset_decay_gate"]
