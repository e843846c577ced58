"""The delta rule (DeltaNet) in plain PyTorch: recurrent reference and chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``)::

    S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T
    o_t = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_scale
from fla.ops.delta_rule.chunk_torch import chunk_delta_torch
from fla.ops.delta_rule.inputs import default_beta, expand_groups, prepare_qk_beta
from fla.ops.delta_rule.recurrent_torch import recurrent_delta_torch


def naive_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token delta rule (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` (``None``: ones).
        scale: query scale, default ``K ** -0.5``; initial_state: ``[N, H, K, V]``;
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
        use_qk_l2norm_in_kernel: L2-normalize q and k first; allow_neg_eigval: use ``2 * beta``.
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    return recurrent_delta_torch(
        q, k, v, default_beta(beta, v), None, default_scale(scale, k), initial_state, output_final_state,
        cu_seqlens, use_qk_l2norm_in_kernel, allow_neg_eigval,
    )  # fmt: skip


def chunk_delta_rule_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked (gated) delta rule with the op's options applied; ``o`` in ``v.dtype``.

    Shapes as :func:`fla.ops.delta_rule.chunk_torch.chunk_delta_torch` (``g`` ``[B, T, H]`` or ``None``).
    """
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval)
    q, k = expand_groups(q, k, v)
    o, ht = chunk_delta_torch(q, k, v, beta, g, default_scale(scale, k), initial_state, cu_seqlens)
    return o.to(v.dtype), ht if output_final_state else None


def naive_chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked delta rule in PyTorch (CPU path of :func:`fla.ops.delta_rule.chunk_delta_rule`); arguments
    as :func:`naive_recurrent_delta_rule`, ``o`` in ``v.dtype``."""
    return chunk_delta_rule_torch(
        q, k, v, default_beta(beta, v), None, scale, initial_state, output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, allow_neg_eigval,
    )  # fmt: skip
