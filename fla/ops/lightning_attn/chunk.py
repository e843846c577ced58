"""Chunked lightning attention: simple GLA with fixed per-head decays (the training path)."""

from __future__ import annotations

import torch

from fla.ops.lightning_attn.decays import lightning_gates
from fla.ops.simple_gla.chunk import chunk_simple_gla


def chunk_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention ``S_t = exp(g_h) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``, with
    ``g_h = -(8 / H) * (1 - layer_idx / num_layers) * h`` (:func:`lightning_log_decays`).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        layer_idx, num_layers: this layer's index and the model's depth (``0 <= layer_idx < num_layers``).
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``; output_final_state: also return
            the final state ``[N, H, K, V]`` float32; cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    Raises:
        ValueError: bad ``layer_idx`` / ``num_layers`` or shapes (naming the argument), before any launch.
    """
    return chunk_simple_gla(
        q, k, v, g_gamma=lightning_gates(q, layer_idx, num_layers), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )  # fmt: skip
