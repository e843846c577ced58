"""Chunked GLA (vector gates): the training path (the shared pipeline of :mod:`fla.ops.common.chunk`)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import chunk_gated
from fla.ops.common.fla_options import accepts_fla_state_options


@accepts_fla_state_options()
def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA, chunked: ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H, K]`` log decays (``<= 0``, e.g. ``logsigmoid``) of the state rows.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (float32 recommended).
        output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    return chunk_gated(q, k, v, scale, initial_state, output_final_state, cu_seqlens, gk=g, gk_name="g")
