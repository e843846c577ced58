"""GLA, token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options
from fla.ops.common.fused_recurrent import fused_recurrent_gated


@accepts_fla_state_options()
def fused_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA by the recurrence ``S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        gk: ``[B, T, H, K]`` / gv: ``[B, T, H, V]`` log decays of state rows / columns (optional;
            ``gv`` has a backward only without ``gk``).
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``;
        output_final_state: also return the final state ``[N, H, K, V]`` float32;
        reverse: not supported (must be ``False``); cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    """
    return fused_recurrent_gated(
        "fused_recurrent_gla", q, k, v, scale, initial_state, output_final_state, reverse,
        cu_seqlens, gk=gk, gv=gv,
    )  # fmt: skip
