"""Gated DeltaProduct in plain PyTorch: the token-by-token reference (the CPU path of the public ops is the
delta rule's PyTorch path on the micro-steps, chosen by their dispatch)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_beta, default_scale
from fla.ops.common.recurrent_torch import recurrent_delta_torch
from fla.ops.gated_delta_product.interleave import (
    check_product_inputs,
    micro_cu_seqlens,
    micro_gates,
    micro_queries,
    token_outputs,
)


def naive_recurrent_gated_delta_product(
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
    """Micro-step by micro-step Gated DeltaProduct (float64 inputs give a float64 result); arguments as
    :func:`fla.ops.gated_delta_product.chunk_gated_delta_product`.

    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state or ``None``.
    """
    check_product_inputs(q, k, v, g, beta, num_householder, cu_seqlens)
    n = num_householder
    o, ht = recurrent_delta_torch(
        micro_queries(q, n), k, v, default_beta(beta, v), micro_gates(g, n), default_scale(scale, k),
        initial_state, output_final_state, micro_cu_seqlens(cu_seqlens, n), use_qk_l2norm_in_kernel,
    )  # fmt: skip
    return token_outputs(o, n), ht
