"""Chunked GLA (vector gates): the training path."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_gated_bwd, chunk_gated_fwd, chunk_layout
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.gla.naive import naive_chunk_gla
from fla.utils import contiguous


class ChunkGLAFunction(torch.autograd.Function):
    """Triton chunk pipeline with vector gates; gradients to q, k, v, g and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, A = chunk_gated_fwd(q, k, v, None, None, g, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(q, k, v, g, A, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, g, A, initial_state = ctx.saved_tensors
        want_dh0 = initial_state is not None and ctx.needs_input_grad[5]
        dq, dk, dv, dg, dh0 = chunk_gated_bwd(
            q, k, v, None, None, g, A, ctx.scale, initial_state, do, dht, ctx.layout, ctx.needs_input_grad[3], want_dh0
        )
        return dq, dk, dv, cast_like(dg, g), None, cast_like(dh0, initial_state), None, None


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA, chunked: ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H, K]`` log decays (``<= 0``, e.g. ``logsigmoid``) of the state rows.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (float32 recommended).
        output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    scale, backend = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, gk_name="g", gk=g)
    if backend == "torch":
        return naive_chunk_gla(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens)
    return ChunkGLAFunction.apply(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens)
