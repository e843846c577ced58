"""Token-by-token (decode) kernel shared by the gated linear-attention families.

One program per (sequence, head, V block) keeps its ``[K, BV]`` state block in fp32 registers and
walks the tokens::

    S <- S * exp(g_t + g_gamma) * exp(gk_t)[:, None] * exp(gv_t)[None, :] + k_t^T v_t
    o_t = scale * q_t S

With a bonus ``u [H, K]`` (RWKV6) the output reads the state before the step plus the current token
weighted by ``u``: ``o_t = scale * q_t (S_{t-1} + diag(u) k_t^T v_t)``.

Every gate is optional. The backward reuses the chunk pipeline (same math, recomputed from the
inputs), so short sequences can train through this path too; with ``gv`` (alone: no other gate) it is
the value-gated pipeline's (:mod:`fla.ops.common.chunk_gv`), which also needs the output ``o``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk import cast_like, chunk_gated_grads, chunk_layout
from fla.ops.common.chunk_gv import chunk_gv_bwd
from fla.ops.common.indexing import state_block, token_bounds
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.common.recurrent_torch import recurrent_gated_torch_op
from fla.ops.common.tuning import given_heuristics
from fla.utils import contiguous, empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


@lean_launch
@given_heuristics(
    USE_G="g",
    USE_GAMMA="g_gamma",
    USE_GK="gk",
    USE_GV="gv",
    USE_U="u",
    USE_H0="h0",
    STORE_HT="ht",
    IS_VARLEN="cu_seqlens",
)
@triton.jit(do_not_specialize=["T"])
def fused_recurrent_fwd_kernel(
    q,
    k,
    v,
    g,
    g_gamma,
    gk,
    gv,
    u,
    h0,
    o,
    ht,
    cu_seqlens,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_G: tl.constexpr,
    USE_GAMMA: tl.constexpr,
    USE_GK: tl.constexpr,
    USE_GV: tl.constexpr,
    USE_U: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)

    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    if USE_GAMMA:
        b_gamma = tl.load(g_gamma + i_h).to(tl.float32)
    if USE_U:
        b_u = tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
    for t in range(0, T_n):
        i_tok = (bos + t) * H + i_h  # token-head row
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_kv = b_k[:, None] * b_v[None, :]  # [BK, BV]
        if USE_U:  # RWKV6: read the state before this step, plus the bonus-weighted current token
            b_o = tl.sum((b_h + b_u[:, None] * b_kv) * b_q[:, None], axis=0)  # [BV]
        if USE_G:
            b_h *= tl.exp(tl.load(g + i_tok).to(tl.float32))
        if USE_GAMMA:
            b_h *= tl.exp(b_gamma)
        if USE_GK:
            b_h *= tl.exp(tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32))[:, None]
        if USE_GV:
            b_h *= tl.exp(tl.load(gv + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32))[None, :]
        b_h += b_kv
        if not USE_U:
            b_o = tl.sum(b_h * b_q[:, None], axis=0)  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def fused_recurrent_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence over every token.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]``; g_gamma: ``[H]``;
        gk: ``[B, T, H, K]``; gv: ``[B, T, H, V]`` (log decays, each optional);
        u: ``[H, K]`` the RWKV6 bonus (optional: the output then reads the state before each step);
        initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = max(16, next_power_of_2(K))
    BV = min(max(16, next_power_of_2(V)), max(16, 4096 // BK))  # keep the fp32 state block <= 4096
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    grid = (cdiv(V, BV), N * H)
    fused_recurrent_fwd_kernel[grid](
        q, k, v, g, g_gamma, gk, gv, u, initial_state, o, ht, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK, BV=BV
    )
    return o, ht


class FusedRecurrentFunction(torch.autograd.Function):
    """Forward by the recurrent kernel, backward by the chunk pipeline (gradients to q, k, v, g, gk, h0)."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_fwd(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens)
        ctx.has_gv = gv is not None
        ctx.gv_only = ctx.has_gv and g is None and g_gamma is None and gk is None
        if ctx.gv_only:
            ctx.save_for_backward(q, k, v, gv, o, initial_state, cu_seqlens)
        else:
            ctx.save_for_backward(q, k, v, g, g_gamma, gk, initial_state, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        if ctx.gv_only:
            q, k, v, gv, o, initial_state, cu_seqlens = ctx.saved_tensors
            want_dh0 = initial_state is not None and ctx.needs_input_grad[8]
            dq, dk, dv, dgv, dh0 = chunk_gv_bwd(
                q, k, v, gv, o, ctx.scale, initial_state, do, dht, chunk_layout(q, cu_seqlens), want_dh0
            )
            return dq, dk, dv, None, None, None, dgv, None, cast_like(dh0, initial_state), None, None
        if ctx.has_gv:
            raise NotImplementedError("the fused recurrent ops have no backward with gv and other gates together")
        q, k, v, g, g_gamma, gk, initial_state, cu_seqlens = ctx.saved_tensors
        wants = ctx.needs_input_grad
        dq, dk, dv, dg, dgk, dh0 = chunk_gated_grads(
            q, k, v, g, g_gamma, gk, None, ctx.scale, initial_state, do, dht, chunk_layout(q, cu_seqlens),
            wants[3] or wants[5], wants[8],
        )  # fmt: skip
        return dq, dk, dv, dg, None, dgk, None, None, dh0, None, None


def fused_recurrent_gated(
    op_name: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: torch.Tensor | None,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of a public GLA-family ``fused_recurrent_<op>``: check the inputs, then run
    :class:`FusedRecurrentFunction` (Triton) or
    :func:`fla.ops.common.recurrent_torch.recurrent_gated_torch_op` (PyTorch), as the dispatch rule says.

    Args:
        op_name: the public op's name (for errors); g ``[B, T, H]`` / g_gamma ``[H]`` / gk ``[B, T, H, K]`` /
            gv ``[B, T, H, V]``: the log gates the op takes (each optional).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    if reverse:
        raise NotImplementedError(f"{op_name}: reverse=True is not supported")
    gates = {"g": g, "g_gamma": g_gamma, "gk": gk, "gv": gv}
    scale = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, **gates)
    args = (q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch((q, k, v, *gates.values(), initial_state), _recurrent_torch, FusedRecurrentFunction.apply, *args)


def _recurrent_torch(q, k, v, *rest) -> tuple[torch.Tensor, torch.Tensor | None]:
    o, ht = recurrent_gated_torch_op(q, k, v, *rest)
    return o.to(v.dtype), ht
