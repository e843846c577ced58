"""Chunked Gated DeltaProduct: the training path (the gated delta rule's chunk pipeline on the micro-steps)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk_delta import chunk_delta
from fla.ops.gated_delta_product.interleave import (
    check_product_inputs,
    micro_cu_seqlens,
    micro_gates,
    micro_queries,
    token_outputs,
)


def chunk_gated_delta_product(
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
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated DeltaProduct, chunked: per token ``t`` the state decays once, ``S <- exp(g_t) S``, then takes
    ``n = num_householder`` delta-rule steps ``S <- S - beta_tj k_tj (k_tj^T S) + beta_tj k_tj v_tj^T`` and
    ``o_t = scale q_t^T S``.

    Args:
        q: ``[B, T, H, K]``; k: ``[B, T*n, H, K]``; v: ``[B, T*n, HV, V]`` (step ``j`` of token ``t`` at
        ``t*n + j``; ``HV`` a multiple of ``H``); g: ``[B, T, HV]`` log decays or ``None`` (no decay);
        beta: ``[B, T*n, HV]`` (``None``: ones); num_householder: ``n >= 1``; scale: default ``K ** -0.5``;
        initial_state: ``[N, HV, K, V]``; output_final_state: also return the final state float32;
        use_qk_l2norm_in_kernel: L2-normalize q and k first; cu_seqlens: ``[N+1]`` bounds over the ``T``
        tokens (``B == 1``); cu_seqlens_cpu: accepted for fla's signature (unused).
    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state ``[N, HV, K, V]`` or ``None``.
    """
    check_product_inputs(q, k, v, g, beta, num_householder, cu_seqlens)
    n = num_householder
    o, ht = chunk_delta(
        micro_queries(q, n), k, v, beta, micro_gates(g, n), scale, initial_state, output_final_state,
        micro_cu_seqlens(cu_seqlens, n), use_qk_l2norm_in_kernel, False,
    )  # fmt: skip
    return token_outputs(o, n), ht
