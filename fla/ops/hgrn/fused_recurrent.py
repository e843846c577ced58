"""HGRN token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.hgrn.inputs import check_hgrn_inputs
from fla.ops.hgrn.scan import fused_recurrent_hgrn_bwd, fused_recurrent_hgrn_fwd
from fla.ops.hgrn.torch_path import hgrn_scan_torch
from fla.utils import contiguous
from fla.utils.backend import dispatch


class FusedRecurrentHGRNFunction(torch.autograd.Function):
    """Forward and backward by the recurrent kernels (one token per step, a ``[BD]`` state per program)."""

    @staticmethod
    @contiguous
    def forward(ctx, x, g, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_hgrn_fwd(x, g, initial_state, output_final_state, cu_seqlens)
        ctx.save_for_backward(g, o, initial_state, cu_seqlens)
        ctx.x_dtype = x.dtype
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        g, o, initial_state, cu_seqlens = ctx.saved_tensors
        dx, dg, dh0 = fused_recurrent_hgrn_bwd(g, o, initial_state, do, dht, cu_seqlens, ctx.x_dtype)
        return dx, dg, dh0, None, None


def _recurrent_triton(x, g, initial_state, output_final_state, cu_seqlens):
    o, ht = FusedRecurrentHGRNFunction.apply(x, g, initial_state, output_final_state, cu_seqlens)
    return o, (ht if output_final_state else None)


def fused_recurrent_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""HGRN's recurrence ``h_t = exp(g_t) * h_{t-1} + x_t``, ``o_t = h_t``, one token at a time.

    Args:
        x: inputs ``[B, T, D]``; g: log forget gates ``[B, T, D]``;
        initial_state: ``[N, D]``; output_final_state: also return the final state ``[N, D]`` float32;
        cu_seqlens: ``[N+1]`` bounds of packed sequences (then ``B == 1``).
    Returns:
        ``o`` ``[B, T, D]`` (``x.dtype``) and the final state or ``None``.
    """
    check_hgrn_inputs(x, g, initial_state, cu_seqlens)
    return dispatch(
        (x, g, initial_state), hgrn_scan_torch, _recurrent_triton, x, g, initial_state, output_final_state, cu_seqlens
    )
