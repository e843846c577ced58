"""``fused_recurrent_iplr_delta_rule``: the IPLR recurrence token by token, on the DPLR recurrent op (``gk = 0``)."""

import torch

from fla.ops.generalized_delta_rule.dplr import fused_recurrent_dplr_delta_rule


def fused_recurrent_iplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``S_t = S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``, ``o_t = scale * S_t^T q_t``: the arguments, shapes
    and returns of :func:`fla.ops.generalized_delta_rule.iplr.chunk_iplr_delta_rule` (no kwargs)."""
    gk = torch.zeros_like(k) if k.dim() == 4 else k
    return fused_recurrent_dplr_delta_rule(
        q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens=cu_seqlens
    )


__all__ = ["fused_recurrent_iplr_delta_rule"]
