"""Chunked simple GLA (scalar per-head gates): the training path."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_gated_bwd, chunk_gated_fwd, chunk_layout
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.simple_gla.naive import naive_chunk_simple_gla
from fla.utils import contiguous


class ChunkSimpleGLAFunction(torch.autograd.Function):
    """Triton chunk pipeline with scalar gates; gradients to q, k, v, g and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, _ = chunk_gated_fwd(q, k, v, g, g_gamma, None, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(q, k, v, g, g_gamma, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, g, g_gamma, initial_state = ctx.saved_tensors
        want_dg = g is not None and ctx.needs_input_grad[3]
        want_dh0 = initial_state is not None and ctx.needs_input_grad[6]
        dq, dk, dv, dg, dh0 = chunk_gated_bwd(
            q, k, v, g, g_gamma, None, None, ctx.scale, initial_state, do, dht, ctx.layout, want_dg, want_dh0
        )
        return dq, dk, dv, cast_like(dg, g), None, None, cast_like(dh0, initial_state), None, None


def chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA, chunked: ``S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` per-token log decays (``<= 0``) or ``None``.
        g_gamma: ``[H]`` constant per-head log decays or ``None`` (no gradient: a constant).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (float32 recommended).
        output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    scale, backend = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, g=g, g_gamma=g_gamma)
    if backend == "torch":
        return naive_chunk_simple_gla(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens)
    return ChunkSimpleGLAFunction.apply(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens)
