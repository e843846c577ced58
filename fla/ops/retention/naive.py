"""RetNet retention in plain PyTorch: simple GLA with the fixed decays of
:func:`fla.ops.retention.decays.retention_log_decays` (``S_t = gamma_h S_{t-1} + k_t^T v_t``)."""

from __future__ import annotations

import torch

from fla.ops.retention.decays import retention_gates
from fla.ops.simple_gla.naive import naive_chunk_simple_gla, naive_recurrent_simple_gla


def naive_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token retention (reference). Shapes as :func:`naive_recurrent_simple_gla`."""
    return naive_recurrent_simple_gla(
        q,
        k,
        v,
        g_gamma=retention_gates(q),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )


def naive_chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked retention in PyTorch (CPU path of :func:`fla.ops.retention.chunk_retention`)."""
    return naive_chunk_simple_gla(
        q,
        k,
        v,
        g_gamma=retention_gates(q),
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )
