"""KDA in plain PyTorch: the recurrent reference and the chunked CPU path.

Recurrence (per value head; ``S`` is ``[K, V]``; ``g_t`` ``[K]`` a log decay per key channel)::

    S'_{t-1} = diag(exp(g_t)) S_{t-1}
    S_t      = S'_{t-1} - beta_t k_t (k_t^T S'_{t-1}) + beta_t k_t v_t^T
    o_t      = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_delta_torch_op
from fla.ops.common.inputs import default_beta, default_scale
from fla.ops.common.recurrent_torch import recurrent_delta_torch


def naive_recurrent_kda(
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
    """Token-by-token KDA (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]``; g: ``[B, T, HV, K]`` log decays (``<= 0``, already
        activated); beta: ``[B, T, HV]`` (``None``: ones); scale: default ``K ** -0.5``;
        initial_state: ``[N, HV, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``);
        use_qk_l2norm_in_kernel: L2-normalize q and k first; allow_neg_eigval: use ``2 * beta``.
    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state when
        ``output_final_state``.
    """
    return recurrent_delta_torch(
        q, k, v, default_beta(beta, v), None, default_scale(scale, k), initial_state, output_final_state,
        cu_seqlens, use_qk_l2norm_in_kernel, allow_neg_eigval, gk=g,
    )  # fmt: skip


def naive_chunk_kda(
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
    """Chunked KDA in PyTorch (the WY form with per-channel decays, the CPU path of :func:`fla.ops.kda.chunk_kda`);
    arguments as :func:`naive_recurrent_kda`, ``o`` in ``v.dtype``."""
    return chunk_delta_torch_op(
        q, k, v, default_beta(beta, v), None, scale, initial_state, output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, allow_neg_eigval, gk=g,
    )  # fmt: skip
