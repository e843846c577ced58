"""Simple GLA, token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import accepts_fla_state_options
from fla.ops.common.fused_recurrent import fused_recurrent_gated


@accepts_fla_state_options()
def fused_recurrent_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA by the recurrence ``S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]``; g_gamma: ``[H]`` (constant).
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``;
        output_final_state: also return the final state ``[N, H, K, V]`` float32;
        reverse: not supported (must be ``False``); cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    """
    return fused_recurrent_gated(
        "fused_recurrent_simple_gla", q, k, v, scale, initial_state, output_final_state,
        reverse, cu_seqlens, g=g, g_gamma=g_gamma,
    )  # fmt: skip
