"""The gated delta rule (Gated DeltaNet) in plain PyTorch: recurrent reference and chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``; ``g_t`` a scalar log decay)::

    S'_{t-1} = exp(g_t) S_{t-1}
    S_t      = S'_{t-1} - beta_t k_t (k_t^T S'_{t-1}) + beta_t k_t v_t^T
    o_t      = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_delta_torch_op
from fla.ops.common.inputs import default_beta, default_scale
from fla.ops.common.recurrent_torch import recurrent_delta_torch


def naive_recurrent_gated_delta_rule(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token gated delta rule (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` log decays (``<= 0``);
        beta: ``[B, T, H]`` (``None``: ones); scale: default ``K ** -0.5``;
        initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``);
        use_qk_l2norm_in_kernel: L2-normalize q and k first; allow_neg_eigval: use ``2 * beta``.
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    return recurrent_delta_torch(
        q, k, v, default_beta(beta, v), g, default_scale(scale, k), initial_state, output_final_state,
        cu_seqlens, use_qk_l2norm_in_kernel, allow_neg_eigval,
    )  # fmt: skip


def naive_chunk_gated_delta_rule(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated delta rule in PyTorch (CPU path of :func:`fla.ops.gated_delta_rule.chunk_gated_delta_rule`);
    arguments as :func:`naive_recurrent_gated_delta_rule`, ``o`` in ``v.dtype``."""
    return chunk_delta_torch_op(
        q, k, v, default_beta(beta, v), g, scale, initial_state, output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, allow_neg_eigval,
    )  # fmt: skip
