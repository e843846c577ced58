"""``fused_recurrent_dplr_delta_rule``: the DPLR delta rule token by token (decoding).

CUDA: the Triton recurrent kernel (:func:`.chunk_fwd.dplr_fused_recurrent_fwd_kernel`), backward by the
chunk pipeline's backward (:mod:`.backward`); CPU / float64: the PyTorch recurrence.
"""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.backward import dplr_grads
from fla.ops.generalized_delta_rule.dplr.chunk import check_dplr_options
from fla.ops.generalized_delta_rule.dplr.chunk_fwd import fused_recurrent_dplr_fwd
from fla.ops.generalized_delta_rule.dplr.inputs import prepare_dplr_call
from fla.ops.generalized_delta_rule.dplr.naive import naive_recurrent_dplr_delta_rule
from fla.utils import contiguous
from fla.utils.backend import dispatch


class FusedRecurrentDPLRDeltaRuleFunction(torch.autograd.Function):
    """Recurrent Triton forward; gradients as :class:`.chunk.ChunkDPLRDeltaRuleFunction`'s."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_dplr_fwd(q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens)
        ctx.save_for_backward(q, k, v, a, b, gk, initial_state, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, a, b, gk, initial_state, cu_seqlens = ctx.saved_tensors
        wants = ctx.needs_input_grad
        grads, dh0 = dplr_grads((q, k, v, a, b, gk), wants[:6], ctx.scale, initial_state, wants[7], cu_seqlens, do, dht)
        return (*grads, None, dh0, None, None)


def _recurrent_torch(q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens):
    o, ht = naive_recurrent_dplr_delta_rule(q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens)
    return o.to(v.dtype), ht


def fused_recurrent_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence of :func:`.chunk.chunk_dplr_delta_rule`, token by token; same arguments (fla 0.6.0's
    order, with ``reverse``: only ``False`` is supported) and returns."""
    if reverse:
        raise NotImplementedError("fused_recurrent_dplr_delta_rule: reverse=True is not supported")
    check_dplr_options("fused_recurrent_dplr_delta_rule", q, kwargs)
    scale = prepare_dplr_call(q, k, v, a, b, gk, scale, initial_state, cu_seqlens)
    args = (q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens)
    inputs = (q, k, v, a, b, gk, initial_state)
    return dispatch(inputs, _recurrent_torch, FusedRecurrentDPLRDeltaRuleFunction.apply, *args)


__all__ = ["FusedRecurrentDPLRDeltaRuleFunction", "fused_recurrent_dplr_delta_rule"]
