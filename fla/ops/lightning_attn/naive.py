"""Lightning attention in plain PyTorch: simple GLA with the fixed decays of
:func:`fla.ops.lightning_attn.decays.lightning_log_decays`."""

from __future__ import annotations

import torch

from fla.ops.lightning_attn.decays import lightning_gates
from fla.ops.simple_gla.naive import naive_chunk_simple_gla, naive_recurrent_simple_gla


def naive_recurrent_lightning_attn(
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
    """Token-by-token lightning attention (reference; float64 inputs give a float64 result)."""
    return naive_recurrent_simple_gla(
        q, k, v, g_gamma=lightning_gates(q, layer_idx, num_layers), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )  # fmt: skip


def naive_chunk_lightning_attn(
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
    """Chunked lightning attention in PyTorch (CPU path of :func:`chunk_lightning_attn`)."""
    return naive_chunk_simple_gla(
        q, k, v, g_gamma=lightning_gates(q, layer_idx, num_layers), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens,
    )  # fmt: skip
