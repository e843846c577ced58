"""GLA in plain PyTorch: the recurrent reference and the chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``, gates are log-space decays)::

    S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t
    o_t = scale * q_t S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_gated_torch_op
from fla.ops.common.recurrent_torch import recurrent_gated_torch_op


def naive_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token GLA (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        gk: ``[B, T, H, K]`` log decays of the state rows (or ``None``).
        gv: ``[B, T, H, V]`` log decays of the state columns (or ``None``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``.
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    return recurrent_gated_torch_op(
        q, k, v, gk=gk, gv=gv, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip


def naive_chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked GLA in PyTorch (the CPU path of :func:`fla.ops.gla.chunk_gla`); same contract as it."""
    return chunk_gated_torch_op(q, k, v, None, None, g, scale, initial_state, output_final_state, cu_seqlens)
