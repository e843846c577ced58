"""Mamba2 SSD token by token: the decoding path (one or a few new tokens per sequence), on the
simple-GLA decode kernel (:mod:`fla.ops.common.fused_recurrent`)."""

from __future__ import annotations

import torch

from fla.ops.mamba2.inputs import DEFAULT_DT_LIMIT, check_ssd_inputs, d_skip, ssd_as_gla
from fla.ops.simple_gla import fused_recurrent_simple_gla


def fused_recurrent_mamba2_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence of :func:`fla.ops.mamba2.chunk_mamba2_ssd`, one token after another (same arguments).

    Returns:
        ``y`` ``[B, T, H, P]`` (``x.dtype``) and the final state ``[S, H, N, P]`` float32 or ``None``.
    """
    check_ssd_inputs(x, dt, A_log, B, C, D, dt_bias, dt_limit, cu_seqlens, initial_state)
    q, k, v, g = ssd_as_gla(x, dt, A_log, B, C, dt_bias, dt_limit)
    y, final_state = fused_recurrent_simple_gla(
        q, k, v, g=g, scale=1.0, initial_state=initial_state, output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip
    return d_skip(y, x, D), final_state


def mamba2_ssd_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding token per sequence: ``x [B, H, P]``, ``dt [B, H]``, ``B, C [B, G, N]``,
    ``state [B, H, N, P]`` -> ``(y [B, H, P], new state [B, H, N, P] float32)``."""
    y, new_state = fused_recurrent_mamba2_ssd(
        x[:, None], dt[:, None], A_log, B[:, None], C[:, None], D, dt_bias, dt_limit,
        initial_state=state, output_final_state=True,
    )  # fmt: skip
    return y[:, 0], new_state
