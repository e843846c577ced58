"""Token-by-token (decode) kernel shared by the gated linear-attention families.

One program per (sequence, head, V block) keeps its ``[K, BV]`` state block in fp32 registers and
walks the tokens::

    S <- S * exp(g_t + g_gamma) * exp(gk_t)[:, None] * exp(gv_t)[None, :] + k_t^T v_t
    o_t = scale * q_t S

Every gate is optional. The backward reuses the chunk pipeline (same math, recomputed from the
inputs), so short sequences can train through this path too; ``gv`` has no backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk import cast_like, chunk_gated_bwd, chunk_layout
from fla.ops.common.indexing import token_bounds
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.common.tuning import given_heuristics
from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


@lean_launch
@given_heuristics(
    USE_G="g", USE_GAMMA="g_gamma", USE_GK="gk", USE_GV="gv", USE_H0="h0", STORE_HT="ht", IS_VARLEN="cu_seqlens"
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
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)

    o_k = tl.arange(0, BK)  # [BK] the whole key dim
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_k, m_v = o_k < K, o_v < V
    o_kv = o_k[:, None] * V + o_v[None, :]  # [BK, BV]
    m_kv = m_k[:, None] & m_v[None, :]

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    if USE_GAMMA:
        b_gamma = tl.load(g_gamma + i_h).to(tl.float32)
    for t in range(0, T_n):
        i_tok = (bos + t) * H + i_h  # token-head row
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        if USE_G:
            b_h *= tl.exp(tl.load(g + i_tok).to(tl.float32))
        if USE_GAMMA:
            b_h *= tl.exp(b_gamma)
        if USE_GK:
            b_h *= tl.exp(tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32))[:, None]
        if USE_GV:
            b_h *= tl.exp(tl.load(gv + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32))[None, :]
        b_h += b_k[:, None] * b_v[None, :]
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence over every token.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]``; g_gamma: ``[H]``;
        gk: ``[B, T, H, K]``; gv: ``[B, T, H, V]`` (log decays, each optional);
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
        q, k, v, g, g_gamma, gk, gv, initial_state, o, ht, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK, BV=BV
    )
    return o, ht


class FusedRecurrentFunction(torch.autograd.Function):
    """Forward by the recurrent kernel, backward by the chunk pipeline (gradients to q, k, v, g, gk, h0)."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_fwd(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens)
        ctx.save_for_backward(q, k, v, g, g_gamma, gk, initial_state, cu_seqlens)
        ctx.scale, ctx.has_gv = scale, gv is not None
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        if ctx.has_gv:
            raise NotImplementedError("the fused recurrent ops have no backward with gv (value-dim gates)")
        q, k, v, g, g_gamma, gk, initial_state, cu_seqlens = ctx.saved_tensors
        if g is not None and gk is not None:
            raise NotImplementedError("the fused recurrent backward takes scalar or vector gates, not both")
        want_dg = (g is not None and ctx.needs_input_grad[3]) or (gk is not None and ctx.needs_input_grad[5])
        want_dh0 = initial_state is not None and ctx.needs_input_grad[8]
        dq, dk, dv, dg, dh0 = chunk_gated_bwd(
            q, k, v, g, g_gamma, gk, None, ctx.scale, initial_state, do, dht, chunk_layout(q, cu_seqlens),
            want_dg, want_dh0,
        )  # fmt: skip
        dg_scalar = dg.to(g.dtype) if dg is not None and g is not None else None
        dgk = dg.to(gk.dtype) if dg is not None and gk is not None else None
        return dq, dk, dv, dg_scalar, None, dgk, None, None, cast_like(dh0, initial_state), None, None


def fused_recurrent_gated(
    op_name: str,
    naive: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: torch.Tensor | None,
    **gates: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of the public ``fused_recurrent_<op>``: checks, then ``naive`` (torch) or the kernel.

    Args:
        op_name: the public op's name (for errors); naive: its ``naive_recurrent_<op>``, called with
            the gates by keyword; gates: ``g`` / ``g_gamma`` / ``gk`` / ``gv`` as the op takes them.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    if reverse:
        raise NotImplementedError(f"{op_name}: reverse=True is not supported")
    scale, backend = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, **gates)
    if backend == "torch":
        o, ht = naive(
            q, k, v, **gates, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )  # fmt: skip
        return o.to(v.dtype), ht
    g, g_gamma, gk, gv = (gates.get(name) for name in ("g", "g_gamma", "gk", "gv"))
    return FusedRecurrentFunction.apply(
        q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, cu_seqlens
    )  # fmt: skip
