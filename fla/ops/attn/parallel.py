"""Causal softmax attention, flash style: Triton forward and backward, GQA, varlen, sliding window, forget gate.

Forward (one program per block of ``BT`` queries and query head): stream the visible key blocks of ``BS`` keys,
keep the running row max ``m``, the running sum ``l`` and the unnormalized output in float32 (online softmax),
then ``o = acc / l`` and the log-sum-exp ``lse = m + log l`` (saved for the backward).

Backward: ``delta_i = o_i . do_i`` (minus ``dlse_i`` when the lse is an output with a gradient); the
probabilities are recomputed from ``lse``: ``p_ij = exp(s_ij - lse_i)``, ``ds_ij = p_ij (do_i . v_j - delta_i)``.

* dq kernel (per query block): ``dq_i = scale sum_j ds_ij k_j`` and ``dG_i += sum_j ds_ij``;
* dkv kernel (per key block and *query* head): ``dk_j = scale sum_i ds_ij q_i``, ``dv_j = sum_i p_ij do_i``,
  ``dG_j -= sum_i ds_ij``; the query heads of a group are summed afterwards (GQA).

An attention sink (``sink_bias [HQ]``) adds ``exp(sink_bias)`` to each denominator (folded into ``lse``, so the
backward's ``p`` already accounts for it; ``dsink = -sum_i exp(sink - lse_i) delta_i``).

The forget gate enters as ``s_ij += G_i - G_j`` with ``G`` the per-sequence cumsum of ``g``
(:func:`fla.ops.common.cumsum.global_cumsum`), and ``dg`` is the per-sequence reverse cumsum of ``dG``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.inputs import check_attn_inputs
from fla.ops.attn.naive import parallel_attn_torch
from fla.ops.common.cumsum import global_cumsum
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.online_softmax import online_softmax_step
from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2
from fla.utils.tensors import contiguous

BT = 64  # queries per program (forward, dq) = keys per program (dkv)
# initial running max: finite, so a row whose keys are all masked so far gives exp(-inf) = 0, never nan
NEG_INIT = tl.constexpr(-1e30)

_KEY = ["HQ", "G", "K", "V", "BK", "BV", "BS", "USE_G", "USE_WINDOW", "DOT_PRECISION"]


def _blocks(K: int, V: int) -> tuple[int, int, int]:
    """``(BK, BV, BS)``: whole head dims (powers of two, >= 16) and the key / query sub-block of the loops."""
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    return BK, BV, 64 if max(BK, BV) <= 64 else 32


@triton.jit
def _visible(o_q, o_s, m_q, m_s, W, USE_WINDOW: tl.constexpr):
    """``[len(o_q), len(o_s)]`` mask: key ``o_s`` is visible to query ``o_q`` (both in range)."""
    m = (o_q[:, None] >= o_s[None, :]) & m_q[:, None] & m_s[None, :]
    if USE_WINDOW:
        m = m & (o_q[:, None] - o_s[None, :] < W)
    return m


@triton.jit
def _key_range(i_tc, T_n, W, BT: tl.constexpr, BS: tl.constexpr, USE_WINDOW: tl.constexpr):
    """First (a multiple of ``BS``) and end key of query block ``i_tc``."""
    lo = i_tc * 0
    if USE_WINDOW:
        lo = tl.maximum(i_tc * BT - W + 1, 0) // BS * BS
    return lo, tl.minimum((i_tc + 1) * BT, T_n)


@lean_launch
@given_heuristics(USE_G="g", HAS_SINK="sink_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(4,), stages=(1, 2, 3)), key=[*_KEY, "HAS_SINK"])
@triton.jit(do_not_specialize=["T", "W"])
def parallel_attn_fwd_kernel(
    q,
    k,
    v,
    g,
    sink_bias,
    o,
    lse,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    W,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_SINK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_hq = i_bh // HQ, i_bh % HQ
    i_h = i_hq // G  # the key/value head of this query head
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_q = i_tc * BT + tl.arange(0, BT)  # [BT] query positions in the sequence
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)  # [BK], [BV]
    m_q, m_k, m_v = o_q < T_n, o_k < K, o_v < V
    b_q = tl.load(q + ((bos + o_q[:, None]) * HQ + i_hq) * K + o_k[None, :], mask=m_q[:, None] & m_k[None, :], other=0)
    if USE_G:
        b_gq = tl.load(g + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)  # [BT] G at the queries

    b_m = tl.full([BT], NEG_INIT, dtype=tl.float32)  # running row max
    b_l = tl.zeros([BT], dtype=tl.float32)  # running sum of exp(s - m)
    b_o = tl.zeros([BT, BV], dtype=tl.float32)  # running sum of exp(s - m) v
    lo, hi = _key_range(i_tc, T_n, W, BT, BS, USE_WINDOW)
    for i_s in range(lo, hi, BS):
        o_s = i_s + tl.arange(0, BS)  # [BS] key positions
        m_s = o_s < T_n
        b_kt = tl.load(
            k + ((bos + o_s[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_s[None, :], other=0
        )  # [BK, BS]
        b_v = tl.load(
            v + ((bos + o_s[:, None]) * H + i_h) * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0
        )  # [BS, BV]
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BT, BS]
        if USE_G:
            b_gk = tl.load(g + (bos + o_s) * HQ + i_hq, mask=m_s, other=0.0)  # [BS]
            b_s += b_gq[:, None] - b_gk[None, :]
        b_s = tl.where(_visible(o_q, o_s, m_q, m_s, W, USE_WINDOW), b_s, float("-inf"))
        b_m, b_l, b_o = online_softmax_step(b_s, b_v, b_m, b_l, b_o, DOT_PRECISION)

    if HAS_SINK:  # one more softmax entry exp(sink) with no value: in the denominator only
        b_sink = tl.load(sink_bias + i_hq).to(tl.float32)
        b_mn = tl.maximum(b_m, b_sink)
        b_r = tl.exp(b_m - b_mn)
        b_l = b_l * b_r + tl.exp(b_sink - b_mn)
        b_o = b_o * b_r[:, None]
        b_m = b_mn
    b_l = tl.where(b_l > 0, b_l, 1.0)  # rows past the end (not stored)
    b_o = b_o / b_l[:, None]
    tl.store(
        o + ((bos + o_q[:, None]) * HQ + i_hq) * V + o_v[None, :],
        b_o.to(o.dtype.element_ty),
        mask=m_q[:, None] & m_v[None, :],
    )
    tl.store(lse + (bos + o_q) * HQ + i_hq, b_m + tl.log(b_l), mask=m_q)


@lean_launch
@given_heuristics(USE_G="g", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(4,), stages=(1, 2, 3)), key=_KEY)
@triton.jit(do_not_specialize=["T", "W"])
def parallel_attn_bwd_dq_kernel(
    q,
    k,
    v,
    g,
    lse,
    delta,
    do,
    dq,
    dg,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    W,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_hq = i_bh // HQ, i_bh % HQ
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_q = i_tc * BT + tl.arange(0, BT)  # [BT]
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_q, m_k, m_v = o_q < T_n, o_k < K, o_v < V
    o_qk = ((bos + o_q[:, None]) * HQ + i_hq) * K + o_k[None, :]  # [BT, BK]
    m_qk = m_q[:, None] & m_k[None, :]
    b_q = tl.load(q + o_qk, mask=m_qk, other=0)
    b_do = tl.load(
        do + ((bos + o_q[:, None]) * HQ + i_hq) * V + o_v[None, :], mask=m_q[:, None] & m_v[None, :], other=0
    )  # [BT, BV]
    b_lse = tl.load(lse + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)  # [BT]
    b_delta = tl.load(delta + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)  # [BT]
    if USE_G:
        b_gq = tl.load(g + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dg = tl.zeros([BT], dtype=tl.float32)
    lo, hi = _key_range(i_tc, T_n, W, BT, BS, USE_WINDOW)
    for i_s in range(lo, hi, BS):
        o_s = i_s + tl.arange(0, BS)
        m_s = o_s < T_n
        b_kt = tl.load(
            k + ((bos + o_s[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_s[None, :], other=0
        )  # [BK, BS]
        b_vt = tl.load(
            v + ((bos + o_s[None, :]) * H + i_h) * V + o_v[:, None], mask=m_v[:, None] & m_s[None, :], other=0
        )  # [BV, BS]
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BT, BS]
        if USE_G:
            b_gk = tl.load(g + (bos + o_s) * HQ + i_hq, mask=m_s, other=0.0)
            b_s += b_gq[:, None] - b_gk[None, :]
        b_p = tl.where(_visible(o_q, o_s, m_q, m_s, W, USE_WINDOW), tl.exp(b_s - b_lse[:, None]), 0.0)
        b_dp = tl.dot(b_do, b_vt, input_precision=DOT_PRECISION)  # [BT, BS]
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_kt.dtype), tl.trans(b_kt), input_precision=DOT_PRECISION)
        if USE_G:
            b_dg += tl.sum(b_ds, 1)
    tl.store(dq + o_qk, (b_dq * scale).to(dq.dtype.element_ty), mask=m_qk)
    if USE_G:
        tl.store(dg + (bos + o_q) * HQ + i_hq, b_dg, mask=m_q)


@lean_launch
@given_heuristics(USE_G="g", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(4,), stages=(1, 2, 3)), key=_KEY)
@triton.jit(do_not_specialize=["T", "W"])
def parallel_attn_bwd_dkv_kernel(
    q,
    k,
    v,
    g,
    lse,
    delta,
    do,
    dk,
    dv,
    dg,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    W,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per block of BT keys and per query head: dk, dv (per query head, summed over the group
    # afterwards) and this query head's key-side dG
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_hq = i_bh // HQ, i_bh % HQ
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_s = i_tc * BT + tl.arange(0, BT)  # [BT] key positions
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_s, m_k, m_v = o_s < T_n, o_k < K, o_v < V
    m_sk, m_sv = m_s[:, None] & m_k[None, :], m_s[:, None] & m_v[None, :]
    b_k = tl.load(k + ((bos + o_s[:, None]) * H + i_h) * K + o_k[None, :], mask=m_sk, other=0)  # [BT, BK]
    b_v = tl.load(v + ((bos + o_s[:, None]) * H + i_h) * V + o_v[None, :], mask=m_sv, other=0)  # [BT, BV]
    if USE_G:
        b_gk = tl.load(g + (bos + o_s) * HQ + i_hq, mask=m_s, other=0.0)  # [BT]

    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    b_dg = tl.zeros([BT], dtype=tl.float32)
    lo = i_tc * BT  # queries at or after the first key (BT is a multiple of BS)
    hi = T_n
    if USE_WINDOW:
        hi = tl.minimum(T_n, (i_tc + 1) * BT + W - 1)
    for i_q in range(lo, hi, BS):
        o_q = i_q + tl.arange(0, BS)  # [BS] query positions
        m_q = o_q < T_n
        b_qt = tl.load(
            q + ((bos + o_q[None, :]) * HQ + i_hq) * K + o_k[:, None], mask=m_k[:, None] & m_q[None, :], other=0
        )  # [BK, BS]
        b_dot = tl.load(
            do + ((bos + o_q[None, :]) * HQ + i_hq) * V + o_v[:, None], mask=m_v[:, None] & m_q[None, :], other=0
        )  # [BV, BS]
        b_lse = tl.load(lse + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)  # [BS]
        b_delta = tl.load(delta + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)  # [BS]
        b_st = tl.dot(b_k, b_qt, input_precision=DOT_PRECISION) * scale  # [BT, BS]: s transposed (key, query)
        if USE_G:
            b_gq = tl.load(g + (bos + o_q) * HQ + i_hq, mask=m_q, other=0.0)
            b_st += b_gq[None, :] - b_gk[:, None]
        m_t = (o_q[None, :] >= o_s[:, None]) & m_q[None, :] & m_s[:, None]  # [BT, BS] visible (key, query)
        if USE_WINDOW:
            m_t = m_t & (o_q[None, :] - o_s[:, None] < W)
        b_pt = tl.where(m_t, tl.exp(b_st - b_lse[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_dot.dtype), tl.trans(b_dot), input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, b_dot, input_precision=DOT_PRECISION)  # [BT, BS]
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_qt.dtype), tl.trans(b_qt), input_precision=DOT_PRECISION)
        if USE_G:
            b_dg -= tl.sum(b_dst, 1)
    tl.store(dk + ((bos + o_s[:, None]) * HQ + i_hq) * K + o_k[None, :], b_dk * scale, mask=m_sk)
    tl.store(dv + ((bos + o_s[:, None]) * HQ + i_hq) * V + o_v[None, :], b_dv, mask=m_sv)
    if USE_G:
        tl.store(dg + (bos + o_s) * HQ + i_hq, b_dg, mask=m_s)


def _launch_args(q, k, v, window_size, layout):
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[-1]
    BK, BV, BS = _blocks(K, V)
    grid = (layout.row_chunks, B * HQ)
    meta = dict(
        HQ=HQ, G=HQ // H, K=K, V=V, BT=BT, BS=BS, BK=BK, BV=BV, USE_WINDOW=window_size is not None,
        DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return grid, (T, 0 if window_size is None else window_size), meta


def parallel_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    G: torch.Tensor | None,
    scale: float,
    window_size: int | None,
    layout: ChunkLayout,
    sink_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kernel launch: ``o [B, T, HQ, V]`` (``q.dtype``) and ``lse [B, T, HQ]`` float32.

    ``G``: ``[B, T, HQ]`` float32 per-sequence gate cumsum, or ``None``; ``sink_bias``: ``[HQ]`` or ``None``.
    """
    B, T, HQ, _ = q.shape
    o = empty(B, T, HQ, v.shape[-1], dtype=q.dtype, device=q.device)
    lse = empty(B, T, HQ, dtype=torch.float32, device=q.device)
    grid, (T, W), meta = _launch_args(q, k, v, window_size, layout)
    parallel_attn_fwd_kernel[grid](
        q, k, v, G, sink_bias, o, lse, layout.cu_seqlens, layout.chunk_indices, scale, T, W, **meta
    )  # fmt: skip
    return o, lse


def parallel_attn_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    G: torch.Tensor | None,
    lse: torch.Tensor,
    delta: torch.Tensor,
    do: torch.Tensor,
    scale: float,
    window_size: int | None,
    layout: ChunkLayout,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backward kernel launches: ``dq`` (``q.dtype``), ``dk``, ``dv`` (float32, groups summed) and ``dG``
    ``[B, T, HQ]`` float32 (``None`` without a gate)."""
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[-1]
    grid, (T, W), meta = _launch_args(q, k, v, window_size, layout)
    dq = empty(B, T, HQ, K, dtype=q.dtype, device=q.device)
    dk = empty(B, T, HQ, K, dtype=torch.float32, device=q.device)
    dv = empty(B, T, HQ, V, dtype=torch.float32, device=q.device)
    dg_q = dg_k = None
    if G is not None:
        dg_q = empty(B, T, HQ, dtype=torch.float32, device=q.device)
        dg_k = empty(B, T, HQ, dtype=torch.float32, device=q.device)
    cu, idx = layout.cu_seqlens, layout.chunk_indices
    parallel_attn_bwd_dq_kernel[grid](q, k, v, G, lse, delta, do, dq, dg_q, cu, idx, scale, T, W, **meta)
    parallel_attn_bwd_dkv_kernel[grid](q, k, v, G, lse, delta, do, dk, dv, dg_k, cu, idx, scale, T, W, **meta)
    if HQ != H:  # GQA: each key/value head gets the sum over its query heads
        dk, dv = dk.view(B, T, H, HQ // H, K).sum(3), dv.view(B, T, H, HQ // H, V).sum(3)
    return dq, dk, dv, None if G is None else dg_q + dg_k


class ParallelAttentionFunction(torch.autograd.Function):
    """Triton softmax attention: ``(o, lse)`` from ``q, k, v`` and an optional log forget gate ``g``."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices):
        layout = attn_layout(q, cu_seqlens, chunk_indices)
        G = None if g is None else global_cumsum(g, cu_seqlens)
        o, lse = parallel_attn_fwd(q, k, v, G, scale, window_size, layout, sink_bias)
        ctx.save_for_backward(q, k, v, o, G, lse, sink_bias)
        ctx.scale, ctx.window_size, ctx.layout, ctx.g_dtype = scale, window_size, layout, None if g is None else g.dtype
        return o, lse

    @staticmethod
    @contiguous
    def backward(ctx, do, dlse):
        q, k, v, o, G, lse, sink_bias = ctx.saved_tensors
        delta = (o.float() * do.float()).sum(-1)  # [B, T, HQ]
        if dlse is not None:  # d lse_i / d s_ij = p_ij: folds into delta
            delta = delta - dlse.float()
        layout = ctx.layout
        dq, dk, dv, dG = parallel_attn_bwd(q, k, v, G, lse, delta, do, ctx.scale, ctx.window_size, layout)
        dg = dsink = None
        if dG is not None:
            dg = global_cumsum(dG, layout.cu_seqlens, reverse=True).to(ctx.g_dtype)
        if sink_bias is not None:  # the sink's probability p_i = exp(sink - lse_i): dsink = -sum_i p_i delta_i
            dsink = -(torch.exp(sink_bias.float() - lse) * delta).sum((0, 1)).to(sink_bias.dtype)
        return dq, dk.to(k.dtype), dv.to(v.dtype), dg, dsink, None, None, None, None


def attn_layout(q: torch.Tensor, cu_seqlens: torch.Tensor | None, chunk_indices: torch.Tensor | None) -> ChunkLayout:
    """Blocks of :data:`BT` tokens of ``q [B, T, ...]``; ``chunk_indices [NC, 2]`` (for ``BT``) when precomputed."""
    layout = ChunkLayout.build(q, cu_seqlens, BT)
    if cu_seqlens is not None and chunk_indices is not None:
        if chunk_indices.dim() != 2 or chunk_indices.shape != layout.chunk_indices.shape:
            raise ValueError(
                f"chunk_indices has shape {list(chunk_indices.shape)}, expected {list(layout.chunk_indices.shape)} "
                f"(prepare_chunk_indices(cu_seqlens, {BT}))"
            )
        layout = ChunkLayout(BT, *(getattr(layout, f) for f in ("batch", "seq_len", "num_seqs", "row_chunks")),
                             cu_seqlens, chunk_indices, layout.chunk_offsets)  # fmt: skip
    return layout


def _parallel_attn_triton(q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices):
    return ParallelAttentionFunction.apply(q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices)


def _parallel_attn_torch(q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices):
    return parallel_attn_torch(q, k, v, g, scale, window_size, cu_seqlens, sink_bias)


def parallel_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    window_size: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    *,
    sink_bias: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Causal softmax attention (fla 0.6.0's ``parallel_attn``): ``o_i = sum_j softmax_j(s_ij) v_j`` over the
    keys ``j <= i`` (``i - j < window_size`` with a window) of the same sequence, with
    ``s_ij = scale * q_i . k_j + G_i - G_j`` (``G`` the per-sequence cumsum of ``g``; 0 without a gate).

    Args:
        q: ``[B, T, HQ, K]``; k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (GQA/MQA: ``H`` divides ``HQ``).
        g: ``[B, T, HQ]`` log forget gates (``logsigmoid`` of a projection in FoX), or ``None``.
        scale: default ``K ** -0.5``.
        window_size: sliding window in tokens, the query itself included (``None``: full causal).
        cu_seqlens: ``[N+1]`` int32/int64 packed sequence bounds (then ``B == 1``).
        chunk_indices: ``prepare_chunk_indices(cu_seqlens, 64)`` when already at hand (varlen only).
        sink_bias: ``[HQ]`` attention-sink logits (GPT-OSS): ``exp(sink_bias[h])`` joins each softmax
            denominator without a value (differentiable), or ``None``.
        return_lse: also return the log-sum-exp of each query's scores (differentiable).
    Returns:
        ``o [B, T, HQ, V]`` in ``q.dtype``; with ``return_lse`` also ``lse [B, T, HQ]`` float32 (float64 for
        float64 inputs).
    """
    check_attn_inputs(q, k, v, g, window_size, cu_seqlens, sink_bias)
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    args = (q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices)
    o, lse = dispatch((q, k, v, g, sink_bias), _parallel_attn_torch, _parallel_attn_triton, *args)
    return (o, lse) if return_lse else o


__all__ = ["ParallelAttentionFunction", "parallel_attn", "parallel_attn_bwd", "parallel_attn_fwd"]
