"""Gated delta rule token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options, decay_from_logits, sigmoid_beta
from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta


@accepts_fla_state_options()
def fused_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    use_beta_sigmoid_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule by the recurrence (arguments and shapes as
    :func:`fla.ops.gated_delta_rule.chunk_gated_delta_rule`), with fla 0.6.0's extras:

    * ``gk`` ``[B, T, HV, K]``: a per-key-channel log decay, applied with ``g`` (KDA's recurrence);
    * ``use_gate_in_kernel`` with ``A_log`` ``[HV]`` (and ``dt_bias`` ``[HV]``): ``g`` holds the raw gate and
      ``-exp(A_log) * softplus(g + dt_bias)`` is the log decay;
    * ``use_beta_sigmoid_in_kernel``: ``beta`` holds logits (``sigmoid(beta)``, doubled with
      ``allow_neg_eigval``);
    * ``gv`` (a value-side decay) is not supported: anything but ``None`` raises.

    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    if gv is not None:
        raise ValueError("fused_recurrent_gated_delta_rule: gv (a value-side decay) is not supported here")
    if use_gate_in_kernel:
        if A_log is None or g is None:
            raise ValueError("fused_recurrent_gated_delta_rule: use_gate_in_kernel=True needs g and A_log")
        g = decay_from_logits(g, A_log, dt_bias)
    beta = sigmoid_beta(beta, use_beta_sigmoid_in_kernel)
    if gk is not None and g is not None:
        gk, g = gk.float() + g.float()[..., None], None  # one per-channel decay: exp(g) exp(gk) = exp(g + gk)
    return fused_recurrent_delta(
        q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel,
        allow_neg_eigval, gk=gk,
    )  # fmt: skip
