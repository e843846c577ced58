"""Chunked Mamba2 SSD: the training / prefill path, on the simple-GLA chunk pipeline
(:mod:`fla.ops.common.chunk`; the mapping is in :mod:`fla.ops.mamba2.inputs`)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import ChunkGatedFunction
from fla.ops.common.chunk_torch import chunk_gated_torch_op
from fla.ops.mamba2.inputs import DEFAULT_DT_LIMIT, check_ssd_inputs, d_skip, ssd_as_gla
from fla.utils.backend import select_backend


def chunk_mamba2_ssd(
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
    """Mamba2's SSD scan, chunked: ``S_t = exp(A dt_t) S_{t-1} + dt_t B_t^T x_t``, ``y_t = C_t S_t + D x_t``.

    Args:
        x: ``[B, T, H, P]`` inputs (P = head_dim).
        dt: ``[B, T, H]`` raw time steps (before ``softplus(dt + dt_bias)`` and the ``dt_limit`` clamp).
        A_log: ``[H]``; ``A = -exp(A_log)``.
        B, C: ``[B, T, G, N]`` (N = state size), shared by the ``H / G`` heads of each group; x's dtype.
        D: ``[H]`` or ``[H, P]`` skip weights, or ``None``.
        dt_bias: ``[H]`` or ``None``.
        dt_limit: ``(low, high)`` clamp of the time step (default none).
        initial_state: ``[S, H, N, P]`` (S sequences; float32 recommended).
        output_final_state: also return the final state ``[S, H, N, P]`` float32.
        cu_seqlens: ``[S+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
    Returns:
        ``y`` ``[B, T, H, P]`` (``x.dtype``) and the final state or ``None``. Gradients reach x, dt, A_log,
        B, C, D, dt_bias and the initial state.
    """
    check_ssd_inputs(x, dt, A_log, B, C, D, dt_bias, dt_limit, cu_seqlens, initial_state)
    # the Triton stages read B / C per group (no [B, T, H, N] copies); the PyTorch form takes them per head
    on_triton = select_backend(x, dt, A_log, B, C, D, dt_bias, initial_state) == "triton"
    q, k, v, g = ssd_as_gla(x, dt, A_log, B, C, dt_bias, dt_limit, grouped=on_triton)
    args = (q, k, v, g, None, None, 1.0, initial_state, output_final_state, cu_seqlens)
    y, final_state = ChunkGatedFunction.apply(*args) if on_triton else chunk_gated_torch_op(*args)
    return d_skip(y, x, D), final_state
