"""RWKV6, token by token: the decoding path (the shared decode kernel with the bonus ``u``; backward
through the RWKV6 chunk pipeline)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import chunk_layout
from fla.ops.common.fused_recurrent import fused_recurrent_fwd
from fla.ops.rwkv6.chunk import rwkv6_grads
from fla.ops.rwkv6.inputs import prepare_rwkv6_call
from fla.ops.rwkv6.naive import naive_recurrent_rwkv6
from fla.utils.backend import dispatch
from fla.utils.tensors import contiguous


class FusedRecurrentRWKV6Function(torch.autograd.Function):
    """Forward by the recurrent kernel, backward by the chunk pipeline (gradients to r, k, v, w, u, h0)."""

    @staticmethod
    @contiguous
    def forward(ctx, r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_fwd(
            r, k, v, gk=w, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens, u=u,
        )  # fmt: skip
        ctx.save_for_backward(r, k, v, w, u, initial_state, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        r, k, v, w, u, initial_state, cu_seqlens = ctx.saved_tensors
        layout = chunk_layout(r, cu_seqlens)
        grads = rwkv6_grads(r, k, v, w, u, None, ctx.scale, initial_state, do, dht, layout, ctx.needs_input_grad)
        dr, dk, dv, dw, du, dh0 = grads
        return dr, dk, dv, dw, du, None, dh0, None, None


def fused_recurrent_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RWKV6 by its recurrence ``o_t = scale * r_t (S_{t-1} + diag(u) k_t^T v_t)``,
    ``S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t``.

    Args:
        r, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; w: ``[B, T, H, K]`` log decays; u: ``[H, K]`` bonus.
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``;
        output_final_state: also return the final state ``[N, H, K, V]`` float32;
        reverse: not supported (must be ``False``); cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    if reverse:
        raise NotImplementedError("fused_recurrent_rwkv6: reverse=True is not supported")
    scale = prepare_rwkv6_call(r, k, v, w, u, scale, initial_state, cu_seqlens)
    args = (r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch((r, k, v, w, u, initial_state), _recurrent_torch, FusedRecurrentRWKV6Function.apply, *args)


def _recurrent_torch(r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens):
    o, ht = naive_recurrent_rwkv6(r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens)
    return o.to(v.dtype), ht
