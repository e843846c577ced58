"""ABC token by token: the decoding path (fla 0.6.0 has none)."""

from __future__ import annotations

import torch

from fla.ops.gsa.fused_recurrent import fused_recurrent_gsa


def fused_recurrent_abc(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """ABC by the recurrence: the maths, arguments and returns of :func:`fla.ops.abc.chunk_abc`
    (:func:`fla.ops.gsa.fused_recurrent_gsa` with ``g=None``)."""
    return fused_recurrent_gsa(q, k, v, s, None, None, initial_state, output_final_state, cu_seqlens=cu_seqlens)
