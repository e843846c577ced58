"""Gated DeltaProduct token by token: the decoding path (the gated delta recurrence on the micro-steps)."""

from __future__ import annotations

import torch

from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta
from fla.ops.gated_delta_product.interleave import (
    check_product_inputs,
    micro_cu_seqlens,
    micro_gates,
    micro_queries,
    token_outputs,
)


def fused_recurrent_gated_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor | None,
    num_householder: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated DeltaProduct by the recurrence (arguments, shapes and maths as
    :func:`fla.ops.gated_delta_product.chunk_gated_delta_product`); differentiable.

    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state ``[N, HV, K, V]`` float32 or ``None``.
    """
    check_product_inputs(q, k, v, g, beta, num_householder, cu_seqlens)
    n = num_householder
    o, ht = fused_recurrent_delta(
        micro_queries(q, n), k, v, beta, micro_gates(g, n), scale, initial_state, output_final_state,
        micro_cu_seqlens(cu_seqlens, n), use_qk_l2norm_in_kernel, False,
    )  # fmt: skip
    return token_outputs(o, n), ht
