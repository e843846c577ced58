"""Comba token by token: the decoding path (the delta-rule recurrent kernel with erase keys)."""

from __future__ import annotations

import torch

from fla.ops.comba.chunk import apply_qkp_options, comba_grads
from fla.ops.comba.inputs import prepare_comba_call
from fla.ops.comba.naive import recurrent_comba_torch
from fla.ops.common.chunk import chunk_layout
from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta_rule_fwd
from fla.ops.common.inputs import expand_groups
from fla.utils import contiguous
from fla.utils.backend import dispatch


class FusedRecurrentCombaFunction(torch.autograd.Function):
    """The recurrent kernel forward (options already applied) with the chunked Triton backward."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, p, beta, g, scale, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_delta_rule_fwd(
            q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, False, False, p=p
        )
        ctx.save_for_backward(q, k, v, p, beta, g, initial_state, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, p, beta, g, initial_state, cu_seqlens = ctx.saved_tensors
        layout = chunk_layout(q, cu_seqlens)
        return comba_grads(ctx, q, k, v, p, beta, g, None, None, initial_state, do, dht, layout)


def fused_recurrent_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    p: torch.Tensor | None,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Comba by the recurrence (note fla's argument order: ``p`` before ``v``; shapes and maths as
    :func:`fla.ops.comba.chunk_comba`). Differentiable (the backward is the chunked one).

    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state ``[N, HV, K, V]`` float32 or ``None``.
    """
    p, beta, scale = prepare_comba_call(q, k, v, p, g, beta, scale, initial_state, cu_seqlens)
    args = (q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens)
    return dispatch((q, k, v, p, g, beta, initial_state), _recurrent_comba_torch, _fused_recurrent_comba_triton, *args)


def _recurrent_comba_torch(q, k, v, *rest) -> tuple[torch.Tensor, torch.Tensor | None]:
    o, ht = recurrent_comba_torch(q, k, v, *rest)
    return o.to(v.dtype), ht


def _fused_recurrent_comba_triton(
    q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
):
    args = (scale, initial_state, output_final_state, cu_seqlens)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, p, beta, g, initial_state)
    )
    if not wants_grad:  # decoding: one kernel, the L2 norm fused in
        _, p = expand_groups(q, p, v)
        q, k = expand_groups(q, k, v)
        return fused_recurrent_delta_rule_fwd(q, k, v, beta, g, *args, use_qk_l2norm_in_kernel, False, p=p)
    q, k, p = apply_qkp_options(q, k, p, v, use_qk_l2norm_in_kernel)
    return FusedRecurrentCombaFunction.apply(q, k, v, p, beta, g, *args)
