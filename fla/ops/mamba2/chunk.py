"""Chunked Mamba2 SSD: the training / prefill path, on the simple-GLA chunk pipeline
(:mod:`fla.ops.common.chunk`; the mapping is in :mod:`fla.ops.mamba2.inputs`).

On the Triton path one autograd Function (:class:`ChunkSSDFunction`) runs the fused input stage, the pipeline and
the skip, and in the backward one pass (:func:`fla.ops.mamba2.ssd_io.ssd_in_bwd`) turns the pipeline's ``dv``,
``dg`` and the output gradient into every gradient of x, dt, A_log, dt_bias and D: no ``[B, T, H]`` autograd
graph, no separate ``dx`` sum of the value and skip paths."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_gated_bwd, chunk_gated_fwd, chunk_layout
from fla.ops.common.chunk_torch import chunk_gated_torch_op
from fla.ops.mamba2.inputs import DEFAULT_DT_LIMIT, check_ssd_inputs, d_skip, ssd_as_gla
from fla.ops.mamba2.ssd_io import ssd_in_bwd, ssd_in_fwd, ssd_skip_fwd
from fla.utils.backend import select_backend
from fla.utils.tensors import contiguous


class ChunkSSDFunction(torch.autograd.Function):
    """The SSD on the Triton stages: input stage -> simple-GLA chunk pipeline (``q = C``, ``k = B`` per group,
    scale 1) -> ``+ D x``; gradients to x, dt, A_log, B, C, D, dt_bias and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, x, dt, A_log, B, C, D, dt_bias, dt_limit, initial_state, output_final_state, cu_seqlens):
        v, g = ssd_in_fwd(x, dt, A_log, dt_bias, dt_limit)
        layout = chunk_layout(C, cu_seqlens)
        y, ht, _ = chunk_gated_fwd(C, B, v, g, None, None, 1.0, initial_state, output_final_state, layout)
        ctx.save_for_backward(x, dt, A_log, B, C, D, dt_bias, v, g, initial_state)
        ctx.dt_limit, ctx.layout = dt_limit, layout
        return (y if D is None else ssd_skip_fwd(y, x, D)), ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        x, dt, A_log, B, C, D, dt_bias, v, g, initial_state = ctx.saved_tensors
        want_dh0 = initial_state is not None and ctx.needs_input_grad[8]
        dC, dB, dv, dg, dh0 = chunk_gated_bwd(
            C, B, v, g, None, None, None, 1.0, initial_state, do, dht, ctx.layout, want_dg=True, want_dh0=want_dh0
        )
        dx, ddt, dA_log, dbias, dD = ssd_in_bwd(x, dt, A_log, dt_bias, ctx.dt_limit, dv, dg, do, D)
        return dx, ddt, dA_log, dB, dC, dD, dbias, None, cast_like(dh0, initial_state), None, None


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
    if select_backend(x, dt, A_log, B, C, D, dt_bias, initial_state) == "triton":
        # the Triton stages read B / C per group (no [B, T, H, N] copies)
        return ChunkSSDFunction.apply(
            x, dt, A_log, B, C, D, dt_bias, tuple(dt_limit), initial_state, output_final_state, cu_seqlens
        )
    q, k, v, g = ssd_as_gla(x, dt, A_log, B, C, dt_bias, dt_limit)
    y, final_state = chunk_gated_torch_op(q, k, v, g, None, None, 1.0, initial_state, output_final_state, cu_seqlens)
    return d_skip(y, x, D), final_state
