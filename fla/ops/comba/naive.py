"""Comba in plain PyTorch: the recurrent reference and the chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``; ``g_t`` a scalar log decay; ``p_t`` the erase key)::

    S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T
    o_t = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_delta_torch
from fla.ops.common.inputs import default_scale, expand_groups, l2norm, prepare_qk_beta
from fla.ops.common.recurrent_torch import recurrent_delta_torch


def naive_recurrent_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token Comba (the reference; float64 inputs give a float64 result). fla 0.6.0's argument order
    (``beta`` before ``g``); the maths of its kernels (the erase reads the state before the decay).

    Args:
        q, k, p: ``[B, T, H, K]``; v: ``[B, T, HV, V]``; beta, g: ``[B, T, HV]``; scale: default
        ``K ** -0.5``; initial_state: ``[N, HV, K, V]``; use_qk_l2norm_in_kernel: L2-normalize q, k and p;
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state or ``None``.
    """
    return recurrent_comba_torch(
        q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
    )


def naive_chunk_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked Comba in PyTorch (fla 0.6.0's signature; arguments as :func:`naive_recurrent_comba`, ``chunk_size``
    tokens per chunk); ``o`` in ``v.dtype``."""
    if p is not None and use_qk_l2norm_in_kernel:
        p = l2norm(p)
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, False)
    _, p = expand_groups(q, k if p is None else p, v)
    q, k = expand_groups(q, k, v)
    o, ht = chunk_delta_torch(q, k, v, beta, g, default_scale(scale, k), initial_state, cu_seqlens, chunk_size, p=p)
    return o.to(v.dtype), ht if output_final_state else None


def chunk_comba_torch(
    q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU path of :func:`fla.ops.comba.chunk_comba` (its argument order)."""
    return naive_chunk_comba(
        q, k, v, p, g, beta, 64, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
    )


def recurrent_comba_torch(
    q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The token loop in :func:`fla.ops.comba.chunk_comba`'s argument order (float32 / float64 ``o``)."""
    return recurrent_delta_torch(
        q, k, v, beta, g, default_scale(scale, k), initial_state, output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, False, p=p,
    )  # fmt: skip
