"""The delta rule token by token: the decoding path (the shared kernel of
:mod:`fla.ops.common.fused_recurrent_delta`, no gate)."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options
from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta


@accepts_fla_state_options()
def fused_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule by the recurrence (arguments and shapes as :func:`fla.ops.delta_rule.chunk_delta_rule`).

    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    return fused_recurrent_delta(
        q, k, v, beta, None, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel,
        allow_neg_eigval,
    )  # fmt: skip
