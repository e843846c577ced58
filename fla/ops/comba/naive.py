"""Comba in plain PyTorch: the recurrent reference and the chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``; ``g_t`` a scalar log decay; ``p_t`` the erase key)::

    S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T
    o_t = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_delta_torch_op
from fla.ops.common.recurrent_torch import recurrent_delta_torch


def naive_recurrent_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token Comba (the reference; float64 inputs give a float64 result).

    Args:
        q, k, p: ``[B, T, H, K]``; v: ``[B, T, HV, V]``; g, beta: ``[B, T, HV]``; scale: default
        ``K ** -0.5``; initial_state: ``[N, HV, K, V]``; use_qk_l2norm_in_kernel: L2-normalize q, k and p;
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state or ``None``.
    """
    scale = float(k.shape[-1] ** -0.5) if scale is None else float(scale)
    return recurrent_delta_torch(
        q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, False, p=p
    )


def naive_chunk_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked Comba in PyTorch (the CPU path of :func:`fla.ops.comba.chunk_comba`); arguments as
    :func:`naive_recurrent_comba`, ``o`` in ``v.dtype``."""
    return chunk_delta_torch_op(
        q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, False, p=p
    )
