"""Chunked Comba: the training path (the delta-rule chunk pipeline with erase keys, see README.md)."""

from __future__ import annotations

import torch

from fla.ops.comba.inputs import prepare_comba_call
from fla.ops.comba.naive import chunk_comba_torch
from fla.ops.common.chunk import cast_like, chunk_layout
from fla.ops.common.chunk_delta import chunk_delta_rule_bwd, chunk_delta_rule_fwd
from fla.ops.common.inputs import expand_groups
from fla.ops.common.l2norm import l2norm_triton
from fla.utils import contiguous
from fla.utils.backend import dispatch


class ChunkCombaFunction(torch.autograd.Function):
    """Triton chunked Comba (options already applied, q/k/p with v's heads); gradients to q, k, v, p, beta,
    g and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, p, beta, g, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, Tm, G = chunk_delta_rule_fwd(q, k, v, beta, g, scale, initial_state, output_final_state, layout, p=p)
        ctx.save_for_backward(q, k, v, p, beta, g, Tm, G, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, p, beta, g, Tm, G, initial_state = ctx.saved_tensors
        return comba_grads(ctx, q, k, v, p, beta, g, Tm, G, initial_state, do, dht, ctx.layout)


def comba_grads(ctx, q, k, v, p, beta, g, Tm, G, initial_state, do, dht, layout) -> tuple:
    """The gradients of an autograd Function with inputs ``(q, k, v, p, beta, g, scale, initial_state,
    output_final_state, cu_seqlens)`` by the delta-rule backward with erase keys (``Tm``, ``G``: the forward's,
    or ``None`` to recompute them), each in its input's dtype."""
    want_dh0 = initial_state is not None and ctx.needs_input_grad[7]
    dq, dk, dv, dbeta, dg, dh0, dp = chunk_delta_rule_bwd(
        q, k, v, beta, g, Tm, ctx.scale, initial_state, do, dht, layout, want_dh0, G=G, p=p
    )
    dbeta, dg, dh0 = cast_like(dbeta, beta), cast_like(dg, g), cast_like(dh0, initial_state)
    return dq, dk, dv, dp, dbeta, dg, None, dh0, None, None


def chunk_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor | None,
    g: torch.Tensor | None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Comba, chunked: ``S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T``, ``o_t = scale q_t^T S_t``
    (the erase key ``p`` reads the state before the token's decay).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value heads);
        p: ``[B, T, H, K]`` erase keys (``None``: ``k``); g: ``[B, T, HV]`` log decays (``<= 0``) or ``None``;
        beta: ``[B, T, HV]`` (``None``: ones); scale: default ``K ** -0.5``; initial_state: ``[N, HV, K, V]``;
        output_final_state: also return the final state ``[N, HV, K, V]`` float32;
        use_qk_l2norm_in_kernel: L2-normalize q, k and p first; cu_seqlens: ``[N+1]`` packed bounds
        (``B == 1``); cu_seqlens_cpu: accepted for fla's signature (the bounds are read from ``cu_seqlens``).
    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state or ``None``.
    """
    p, beta, scale = prepare_comba_call(q, k, v, p, g, beta, scale, initial_state, cu_seqlens)
    args = (q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens)
    return dispatch((q, k, v, p, g, beta, initial_state), chunk_comba_torch, _chunk_comba_triton, *args)


def _chunk_comba_triton(
    q, k, v, p, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, cu_seqlens
):
    q, k, p = apply_qkp_options(q, k, p, v, use_qk_l2norm_in_kernel)
    return ChunkCombaFunction.apply(q, k, v, p, beta, g, scale, initial_state, output_final_state, cu_seqlens)


def apply_qkp_options(q, k, p, v, use_qk_l2norm_in_kernel: bool) -> tuple[torch.Tensor, ...]:
    """q, k and p L2-normalized (Triton, with its backward) when asked, then repeated to ``v``'s heads."""
    if use_qk_l2norm_in_kernel:
        q, k, p = l2norm_triton(q), l2norm_triton(k), l2norm_triton(p)
    _, p = expand_groups(q, p, v)
    q, k = expand_groups(q, k, v)
    return q, k, p
