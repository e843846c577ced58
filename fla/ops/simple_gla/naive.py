"""Simple GLA (scalar per-head gates) in plain PyTorch: recurrent reference and chunked CPU path.

Recurrence (per head; ``S`` is ``[K, V]``; ``g_t`` per token and/or a constant ``g_gamma``)::

    S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t
    o_t = scale * q_t S_t
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_gated_torch_op
from fla.ops.common.recurrent_torch import recurrent_gated_torch_op


def naive_recurrent_simple_gla(
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
    """Token-by-token simple GLA (the reference; float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` per-token log decays; g_gamma: ``[H]`` constant log decays (either, both
            or neither).
        scale: query scale, default ``K ** -0.5``; initial_state: ``[N, H, K, V]``;
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    return recurrent_gated_torch_op(
        q, k, v, g, g_gamma, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip


def naive_chunk_simple_gla(
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
    """Chunked simple GLA in PyTorch (CPU path of :func:`fla.ops.simple_gla.chunk_simple_gla`)."""
    return chunk_gated_torch_op(q, k, v, g, g_gamma, None, scale, initial_state, output_final_state, cu_seqlens)
