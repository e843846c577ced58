"""Lightning attention, token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.lightning_attn.decays import lightning_gates
from fla.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla


def fused_recurrent_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention by the recurrence (see :func:`fla.ops.lightning_attn.chunk_lightning_attn`); same
    arguments, plus ``reverse`` (must be ``False``)."""
    return fused_recurrent_simple_gla(
        q, k, v, g_gamma=lightning_gates(q, layer_idx, num_layers), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens,
    )  # fmt: skip
