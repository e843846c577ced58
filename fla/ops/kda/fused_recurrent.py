"""KDA token by token: the decoding path (the shared recurrent delta kernel with a per-key-channel gate)."""

from __future__ import annotations

import torch

from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta
from fla.ops.kda.gate import check_kda_inputs, prepare_kda_gates, state_from_kv, state_to_kv


def fused_recurrent_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    lower_bound: float | None = None,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KDA by the recurrence (arguments and shapes as :func:`fla.ops.kda.chunk_kda`; ``A_log`` ``[HV]`` and
    ``dt_bias`` ``[HV * K]`` are used when ``use_gate_in_kernel``). Gradients, when wanted, come from the
    chunked backward.

    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state (float32) or ``None``.
    """
    if kwargs:
        raise TypeError(f"fused_recurrent_kda got unexpected keyword arguments {sorted(kwargs)}")
    check_kda_inputs(
        q, v, g, A_log, dt_bias, use_gate_in_kernel, use_beta_sigmoid_in_kernel, allow_neg_eigval, lower_bound
    )
    g, beta = prepare_kda_gates(
        g, beta, A_log if use_gate_in_kernel else None, dt_bias, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
        lower_bound,
    )  # fmt: skip
    o, ht = fused_recurrent_delta(
        q, k, v, beta, None, scale, state_to_kv(initial_state, state_v_first), output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, allow_neg_eigval, gk=g, gk_name="g",
    )  # fmt: skip
    return o, state_from_kv(ht, state_v_first)
