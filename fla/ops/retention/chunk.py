"""Chunked RetNet retention: simple GLA with fixed per-head decays."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options
from fla.ops.retention.decays import retention_gates
from fla.ops.simple_gla.chunk import chunk_simple_gla


@accepts_fla_state_options()
def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention ``S_t = gamma_h S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``, with
    ``gamma_h = 1 - 2^(-5-h)``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; scale: default ``K ** -0.5``;
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state
        ``[N, H, K, V]`` float32; cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    """
    return chunk_simple_gla(
        q, k, v, g_gamma=retention_gates(q), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )  # fmt: skip
