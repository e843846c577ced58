"""RetNet retention, token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options
from fla.ops.retention.decays import retention_gates
from fla.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla


@accepts_fla_state_options()
def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention by the recurrence (see :func:`fla.ops.retention.chunk_retention`); same arguments,
    plus ``reverse`` (must be ``False``)."""
    return fused_recurrent_simple_gla(
        q, k, v, g_gamma=retention_gates(q), scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens,
    )  # fmt: skip
