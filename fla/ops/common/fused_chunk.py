"""fla 0.6.0's ``fla.ops.common.fused_chunk.fused_chunk``: simple GLA (per-head scalar gates) under fla's internal
name, for code that imports it from there. It runs :func:`fla.ops.simple_gla.chunk_simple_gla`."""

from __future__ import annotations

import torch


def fused_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``S_t = exp(g_t) S_{t-1} + k_t^T v_t`` (or the constant decay ``g_gamma``), ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` per-token log decays; g_gamma: ``[H]`` constant log decays (at most one of the two).
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state (float32).
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
    Returns:
        ``o [B, T, H, V]`` and the final state ``[N, H, K, V]`` or ``None``.
    """
    if g is not None and g_gamma is not None:
        raise ValueError("fused_chunk: give g or g_gamma, not both")
    # imported here: fla.ops.simple_gla imports this package's stages
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_simple_gla(
        q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )  # fmt: skip


__all__ = ["fused_chunk"]
