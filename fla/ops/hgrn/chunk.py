"""HGRN by the chunked scan: the training path."""

from __future__ import annotations

import torch

from fla.ops.common.layout import ChunkLayout
from fla.ops.hgrn.inputs import check_hgrn_inputs
from fla.ops.hgrn.scan import CHUNK_SIZE, chunk_hgrn_scan
from fla.ops.hgrn.torch_path import hgrn_scan_torch
from fla.utils import contiguous
from fla.utils.backend import dispatch


class ChunkHGRNFunction(torch.autograd.Function):
    """Forward and backward by the chunked scan kernels (:mod:`fla.ops.hgrn.scan`)."""

    @staticmethod
    @contiguous
    def forward(ctx, x, g, initial_state, output_final_state, cu_seqlens):
        layout = ChunkLayout.build(x, cu_seqlens, CHUNK_SIZE)
        o, ht, _ = chunk_hgrn_scan(x, g, initial_state, output_final_state, layout)
        ctx.save_for_backward(g, o, initial_state, cu_seqlens)
        ctx.layout, ctx.x_dtype = layout, x.dtype
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        g, o, initial_state, cu_seqlens = ctx.saved_tensors
        dx, dh0, dg = chunk_hgrn_scan(
            do, g, dht, initial_state is not None, ctx.layout, reverse=True, out_dtype=ctx.x_dtype, o_fwd=o,
            h0_fwd=initial_state, final_dtype=initial_state.dtype if initial_state is not None else torch.float32,
        )  # fmt: skip
        return dx, dg, dh0, None, None


def _chunk_triton(x, g, initial_state, output_final_state, cu_seqlens):
    o, ht = ChunkHGRNFunction.apply(x, g, initial_state, output_final_state, cu_seqlens)
    return o, (ht if output_final_state else None)


def chunk_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The element-wise gated linear recurrence of HGRN, ``h_t = exp(g_t) * h_{t-1} + x_t``, ``o_t = h_t``.

    Args:
        x: inputs ``[B, T, D]``.
        g: log forget gates ``[B, T, D]`` (``<= 0`` in HGRN, e.g. ``logsigmoid``).
        initial_state: ``[N, D]`` for the ``N`` sequences (``B``, or ``len(cu_seqlens) - 1``).
        output_final_state: also return the final state ``[N, D]`` float32.
        cu_seqlens: ``[N+1]`` FlashAttention-style bounds of packed sequences (then ``B == 1``).
    Returns:
        ``o`` ``[B, T, D]`` (``x.dtype``) and the final state or ``None``.
    """
    check_hgrn_inputs(x, g, initial_state, cu_seqlens)
    return dispatch(
        (x, g, initial_state), hgrn_scan_torch, _chunk_triton, x, g, initial_state, output_final_state, cu_seqlens
    )
