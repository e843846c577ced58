"""Causal softmax attention, flash style: Triton forward and backward, GQA, varlen, sliding window, forget gate.

Forward (one program per block of ``BT`` queries and query head): stream the visible key blocks of ``BS`` keys,
keep the running row max ``m``, the running sum ``l`` and the unnormalized output in float32 (online softmax),
then ``o = acc / l`` and the log-sum-exp ``lse = m + log l`` (saved for the backward).

Backward: ``delta_i = o_i . do_i`` (minus ``dlse_i`` when the lse is an output with a gradient; a small
kernel); the probabilities are recomputed from ``lse``: ``p_ij = exp(s_ij - lse_i)``,
``ds_ij = p_ij (do_i . v_j - delta_i)``.

* dq kernel (per query block): ``dq_i = scale sum_j ds_ij k_j`` and ``dG_i += sum_j ds_ij``;
* dkv kernel (per key block and *key/value* head): ``dk_j = scale sum_i ds_ij q_i``, ``dv_j = sum_i p_ij do_i``
  summed over the query heads of the GQA group inside the program (written once, in the input dtype), and each
  query head's key-side ``dG_j -= sum_i ds_ij``.

Speed: every kernel works in base 2 (``log2 e`` folded into the scale and the gate cumsum ``G``, ``tl.exp2``;
``lse`` is natural log at the API and converted at store / load), and splits its loop into the blocks that
need a mask (the causal diagonal, the window's far edge, the end of the sequence) and the full blocks in
between, which load and score without any mask. Tile sizes are autotuned (:mod:`fla.ops.attn.tiles`).

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
from fla.ops.attn.tiles import DKV_TILES, DQ_TILES, FWD_TILES, prune_tiles, tile_configs, varlen_tile
from fla.ops.common.cumsum import global_cumsum
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.ops.utils.index import prepare_lens
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2
from fla.utils.tensors import contiguous

PUBLIC_CHUNK = 64  # the tile of the public ``chunk_indices`` argument (fla 0.6.0: prepare_chunk_indices(cu, 64))
# initial running max: finite, so a row whose keys are all masked so far gives exp2(-inf) = 0, never nan
NEG_INIT = tl.constexpr(-1e30)
LOG2E = tl.constexpr(1.4426950408889634)  # scores and G in base 2: exp(x) = exp2(x log2 e)
LN2 = tl.constexpr(0.6931471805599453)

_PRUNE = {"early_config_prune": prune_tiles}
_KEY = ["HQ", "G", "K", "V", "BK", "BV", "USE_G", "USE_WINDOW", "DOT_PRECISION", "IS_VARLEN"]


def _dims(K: int, V: int) -> tuple[int, int]:
    """``(BK, BV)``: whole head dims, powers of two, >= 16."""
    return max(16, next_power_of_2(K)), max(16, next_power_of_2(V))


@triton.jit
def _load2(ptrs, m_a, m_b, USE_A: tl.constexpr, USE_B: tl.constexpr):
    """``tl.load(ptrs)`` masked by ``m_a`` and / or ``m_b`` (broadcast to ``ptrs``) only where asked: full tiles
    load without a mask. Masked elements read 0."""
    if USE_A and USE_B:
        x = tl.load(ptrs, mask=m_a & m_b, other=0)
    elif USE_A:
        x = tl.load(ptrs, mask=m_a, other=0)
    elif USE_B:
        x = tl.load(ptrs, mask=m_b, other=0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _program(T, NH, BT: tl.constexpr, IS_VARLEN: tl.constexpr, HEAVY_LAST: tl.constexpr):
    """``(i_t, i_b, i_h)``: block row, batch row and head of this program of a flat grid of ``blocks x B x NH``
    (``B = 1`` with varlen), heads fastest (the query heads of a GQA group run together and share their keys in
    L2). Causal work grows with the query block and shrinks with the key block: ``HEAVY_LAST`` (query-block
    kernels) hands out the blocks from the last, so the longest programs start first and the short ones fill the
    tail of the launch."""
    pid = tl.program_id(0).to(tl.int64)
    n = tl.num_programs(0).to(tl.int64)
    if IS_VARLEN:
        n_bh = n * 0 + NH
    else:
        n_bh = n // tl.cdiv(T, BT)
    i_t = pid // n_bh
    i_bh = pid % n_bh
    if HEAVY_LAST:
        i_t = n // n_bh - 1 - i_t
    return i_t, i_bh // NH, i_bh % NH


@triton.jit
def _fwd_keys(
    b_q, b_gq, b_m, b_l, b_o, p_k, p_v, p_g, q_start, lo, hi, T_n, W, qk_scale,
    SK: tl.constexpr, SV: tl.constexpr, SG: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_WINDOW: tl.constexpr, MASK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Fold the keys ``[lo, hi)`` (block starts, multiples of ``BS``) into the running base-2 softmax of the
    queries ``q_start + [0, BT)``. ``p_k``, ``p_v``, ``p_g``: this head's key 0 (row strides ``SK``, ``SV``,
    ``SG``). ``MASK``: apply the causal / window mask and bound the loads by ``T_n`` (else every pair is visible)."""
    r_q, r_s = tl.arange(0, BT), tl.arange(0, BS)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    for i_s in range(lo, hi, BS):
        m_s = r_s < (T_n - i_s).to(tl.int32)  # [BS] keys inside the sequence
        b_kt = _load2(p_k + i_s * SK + r_s[None, :] * SK + o_k[:, None], o_k[:, None] < K, m_s[None, :], K < BK, MASK)
        b_v = _load2(p_v + i_s * SV + r_s[:, None] * SV + o_v[None, :], m_s[:, None], o_v[None, :] < V, MASK, V < BV)
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * qk_scale  # [BT, BS] base-2 scores
        if USE_G:
            b_gk = _load2(p_g + i_s * SG + r_s * SG, m_s, m_s, MASK, False).to(tl.float32) * LOG2E
            b_s += b_gq[:, None] - b_gk[None, :]
        if MASK:
            b_d = r_q[:, None] + (q_start - i_s).to(tl.int32) - r_s[None, :]  # [BT, BS] query - key position
            m_t = b_d >= 0
            if USE_WINDOW:
                m_t = m_t & (b_d < W)
            b_s = tl.where(m_t, b_s, float("-inf"))
        b_mn = tl.maximum(b_m, tl.max(b_s, 1))
        b_r = tl.exp2(b_m - b_mn)  # [BT] rescale of what was summed so far
        b_p = tl.exp2(b_s - b_mn[:, None])
        b_l = b_l * b_r + tl.sum(b_p, 1)
        b_o = b_o * b_r[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
        b_m = b_mn
    return b_m, b_l, b_o


@triton.jit
def _query_block_keys(q_start, T_n, W, BT: tl.constexpr, BS: tl.constexpr, USE_WINDOW: tl.constexpr):
    """Key block starts of the queries ``q_start + [0, BT)``: ``(lo, full_lo, hi)``. ``[lo, full_lo)`` is the
    window's far edge (masked), ``[full_lo, q_start)`` the blocks every query sees whole (no mask),
    ``[q_start, hi)`` the diagonal (masked; it also holds the sequence end)."""
    lo = q_start * 0
    full_lo = q_start * 0
    if USE_WINDOW:
        lo = tl.maximum(q_start - W + 1, 0) // BS * BS
        # a block starting at i_s is whole for every query iff (q_start + BT - 1) - i_s < W
        full_lo = tl.minimum((tl.maximum(q_start + BT - W, 0) + BS - 1) // BS * BS, q_start)
    return lo, full_lo, tl.minimum(q_start + BT, T_n)


@lean_launch
@given_heuristics(USE_G="g", HAS_SINK="sink_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=tile_configs(FWD_TILES), key=[*_KEY, "HAS_SINK"], prune_configs_by=_PRUNE)
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
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_SINK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_b, i_hq = _program(T, HQ, BT, IS_VARLEN, True)
    i_h = i_hq // G  # the key/value head of this query head
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    q_start = i_tc * BT

    r_q = tl.arange(0, BT)  # [BT] query rows of this block
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_q = r_q < (T_n - q_start).to(tl.int32)
    p_q = q + ((bos + q_start) * HQ + i_hq) * K
    b_q = _load2(p_q + r_q[:, None] * (HQ * K) + o_k[None, :], m_q[:, None], o_k[None, :] < K, True, K < BK)
    b_gq = tl.zeros([BT], dtype=tl.float32)
    if USE_G:  # [BT] G at the queries, base 2
        b_gq = tl.load(g + (bos + q_start + r_q) * HQ + i_hq, mask=m_q, other=0.0).to(tl.float32) * LOG2E
    qk_scale = scale * LOG2E

    b_m = tl.full([BT], NEG_INIT, dtype=tl.float32)  # running row max (base 2)
    b_l = tl.zeros([BT], dtype=tl.float32)  # running sum of exp2(s - m)
    b_o = tl.zeros([BT, BV], dtype=tl.float32)  # running sum of exp2(s - m) v
    p_k, p_v = k + (bos * H + i_h) * K, v + (bos * H + i_h) * V
    p_g = lse + bos * HQ + i_hq  # a float32 stand-in, never read without a gate
    if USE_G:
        p_g = g + bos * HQ + i_hq
    lo, full_lo, hi = _query_block_keys(q_start, T_n, W, BT, BS, USE_WINDOW)
    if USE_WINDOW:  # the window's far edge
        b_m, b_l, b_o = _fwd_keys(
            b_q, b_gq, b_m, b_l, b_o, p_k, p_v, p_g, q_start, lo, full_lo, T_n, W, qk_scale,
            H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
        )  # fmt: skip
    b_m, b_l, b_o = _fwd_keys(  # whole blocks
        b_q, b_gq, b_m, b_l, b_o, p_k, p_v, p_g, q_start, full_lo, q_start, T_n, W, qk_scale,
        H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, False, DOT_PRECISION,
    )  # fmt: skip
    b_m, b_l, b_o = _fwd_keys(  # the diagonal
        b_q, b_gq, b_m, b_l, b_o, p_k, p_v, p_g, q_start, q_start, hi, T_n, W, qk_scale,
        H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
    )  # fmt: skip

    if HAS_SINK:  # one more softmax entry exp(sink) with no value: in the denominator only
        b_sink = tl.load(sink_bias + i_hq).to(tl.float32) * LOG2E
        b_mn = tl.maximum(b_m, b_sink)
        b_r = tl.exp2(b_m - b_mn)
        b_l = b_l * b_r + tl.exp2(b_sink - b_mn)
        b_o = b_o * b_r[:, None]
        b_m = b_mn
    b_l = tl.where(b_l > 0, b_l, 1.0)  # rows past the end (not stored)
    b_o = b_o / b_l[:, None]
    p_o = o + ((bos + q_start) * HQ + i_hq) * V + r_q[:, None] * (HQ * V) + o_v[None, :]
    if V < BV:
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_q[:, None] & (o_v[None, :] < V))
    else:
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_q[:, None])
    tl.store(lse + (bos + q_start + r_q) * HQ + i_hq, (b_m + tl.log2(b_l)) * LN2, mask=m_q)  # natural log


@lean_launch
@given_heuristics(HAS_DLSE="dlse")
@triton.jit(do_not_specialize=["N"])
def parallel_attn_bwd_delta_kernel(o, do, dlse, delta, N, V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
                                   HAS_DLSE: tl.constexpr):  # fmt: skip
    """``delta [N] = rowsum(o * do) - dlse`` over the ``N = B T HQ`` rows of ``o, do [N, V]`` (float32)."""
    i_r = tl.program_id(0).to(tl.int64)
    o_r, o_v = i_r * BR + tl.arange(0, BR), tl.arange(0, BV)
    m_r = o_r < N
    m_rv = m_r[:, None] & (o_v[None, :] < V)
    p = o_r[:, None] * V + o_v[None, :]
    b_o = tl.load(o + p, mask=m_rv, other=0).to(tl.float32)
    b_do = tl.load(do + p, mask=m_rv, other=0).to(tl.float32)
    b_delta = tl.sum(b_o * b_do, 1)
    if HAS_DLSE:  # d lse_i / d s_ij = p_ij: the lse's gradient folds into delta
        b_delta -= tl.load(dlse + o_r, mask=m_r, other=0).to(tl.float32)
    tl.store(delta + o_r, b_delta, mask=m_r)


@triton.jit
def _dq_keys(
    b_q, b_do, b_lse, b_delta, b_gq, b_dq, b_dg, p_k, p_v, p_g, q_start, lo, hi, T_n, W, qk_scale,
    SK: tl.constexpr, SV: tl.constexpr, SG: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_WINDOW: tl.constexpr, MASK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Accumulate the keys ``[lo, hi)`` into ``dq`` (unscaled) and the row sums of ``ds`` of the queries
    ``q_start + [0, BT)``; ``b_lse`` in base 2. ``MASK`` as in :func:`_fwd_keys`."""
    r_q, r_s = tl.arange(0, BT), tl.arange(0, BS)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    for i_s in range(lo, hi, BS):
        m_s = r_s < (T_n - i_s).to(tl.int32)
        b_kt = _load2(p_k + i_s * SK + r_s[None, :] * SK + o_k[:, None], o_k[:, None] < K, m_s[None, :], K < BK, MASK)
        b_vt = _load2(p_v + i_s * SV + r_s[None, :] * SV + o_v[:, None], o_v[:, None] < V, m_s[None, :], V < BV, MASK)
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * qk_scale  # [BT, BS]
        if USE_G:
            b_gk = _load2(p_g + i_s * SG + r_s * SG, m_s, m_s, MASK, False).to(tl.float32) * LOG2E
            b_s += b_gq[:, None] - b_gk[None, :]
        b_p = tl.exp2(b_s - b_lse[:, None])
        if MASK:
            b_d = r_q[:, None] + (q_start - i_s).to(tl.int32) - r_s[None, :]
            m_t = b_d >= 0
            if USE_WINDOW:
                m_t = m_t & (b_d < W)
            b_p = tl.where(m_t, b_p, 0.0)
        b_dp = tl.dot(b_do, b_vt, input_precision=DOT_PRECISION)  # [BT, BS]
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_kt.dtype), tl.trans(b_kt), input_precision=DOT_PRECISION)
        if USE_G:
            b_dg += tl.sum(b_ds, 1)
    return b_dq, b_dg


@lean_launch
@given_heuristics(USE_G="g", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=tile_configs(DQ_TILES), key=_KEY, prune_configs_by=_PRUNE)
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
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_b, i_hq = _program(T, HQ, BT, IS_VARLEN, True)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    q_start = i_tc * BT

    r_q = tl.arange(0, BT)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_q = r_q < (T_n - q_start).to(tl.int32)
    p_dq = ((bos + q_start) * HQ + i_hq) * K + r_q[:, None] * (HQ * K) + o_k[None, :]  # [BT, BK] offsets
    b_q = _load2(q + p_dq, m_q[:, None], o_k[None, :] < K, True, K < BK)
    p_do = do + ((bos + q_start) * HQ + i_hq) * V + r_q[:, None] * (HQ * V) + o_v[None, :]
    b_do = _load2(p_do, m_q[:, None], o_v[None, :] < V, True, V < BV)  # [BT, BV]
    o_row = (bos + q_start + r_q) * HQ + i_hq  # [BT]
    b_lse = tl.load(lse + o_row, mask=m_q, other=0.0) * LOG2E  # base 2
    b_delta = tl.load(delta + o_row, mask=m_q, other=0.0)
    b_gq = tl.zeros([BT], dtype=tl.float32)
    if USE_G:
        b_gq = tl.load(g + o_row, mask=m_q, other=0.0).to(tl.float32) * LOG2E
    qk_scale = scale * LOG2E

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dg = tl.zeros([BT], dtype=tl.float32)
    p_k, p_v = k + (bos * H + i_h) * K, v + (bos * H + i_h) * V
    p_g = lse + bos * HQ + i_hq  # a float32 stand-in, never read without a gate
    if USE_G:
        p_g = g + bos * HQ + i_hq
    lo, full_lo, hi = _query_block_keys(q_start, T_n, W, BT, BS, USE_WINDOW)
    if USE_WINDOW:
        b_dq, b_dg = _dq_keys(
            b_q, b_do, b_lse, b_delta, b_gq, b_dq, b_dg, p_k, p_v, p_g, q_start, lo, full_lo, T_n, W, qk_scale,
            H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
        )  # fmt: skip
    b_dq, b_dg = _dq_keys(
        b_q, b_do, b_lse, b_delta, b_gq, b_dq, b_dg, p_k, p_v, p_g, q_start, full_lo, q_start, T_n, W, qk_scale,
        H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, False, DOT_PRECISION,
    )  # fmt: skip
    b_dq, b_dg = _dq_keys(
        b_q, b_do, b_lse, b_delta, b_gq, b_dq, b_dg, p_k, p_v, p_g, q_start, q_start, hi, T_n, W, qk_scale,
        H * K, H * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
    )  # fmt: skip
    if K < BK:
        tl.store(dq + p_dq, (b_dq * scale).to(dq.dtype.element_ty), mask=m_q[:, None] & (o_k[None, :] < K))
    else:
        tl.store(dq + p_dq, (b_dq * scale).to(dq.dtype.element_ty), mask=m_q[:, None])
    if USE_G:
        tl.store(dg + o_row, b_dg, mask=m_q)


@triton.jit
def _dkv_queries(
    b_k, b_v, b_gk, b_dk, b_dv, b_dg, p_q, p_do, p_lse, p_delta, p_g, k_start, lo, hi, T_n, W, qk_scale,
    SQ: tl.constexpr, SO: tl.constexpr, SG: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_WINDOW: tl.constexpr, MASK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """Accumulate the queries ``[lo, hi)`` (block starts) of one query head into ``dk`` (unscaled), ``dv`` and the
    (negated) column sums of ``ds`` of the keys ``k_start + [0, BT)``. Scores are transposed: ``[key, query]``.
    ``MASK``: causal / window mask and queries bounded by ``T_n`` (else every pair is visible)."""
    r_k, r_q = tl.arange(0, BT), tl.arange(0, BS)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    for i_q in range(lo, hi, BS):
        m_q = r_q < (T_n - i_q).to(tl.int32)  # [BS] queries inside the sequence
        b_qt = _load2(p_q + i_q * SQ + r_q[None, :] * SQ + o_k[:, None], o_k[:, None] < K, m_q[None, :], K < BK, MASK)
        b_dot = _load2(p_do + i_q * SO + r_q[None, :] * SO + o_v[:, None], o_v[:, None] < V, m_q[None, :], V < BV, MASK)
        b_lse = _load2(p_lse + i_q * SG + r_q * SG, m_q, m_q, MASK, False) * LOG2E  # [BS] base 2
        b_delta = _load2(p_delta + i_q * SG + r_q * SG, m_q, m_q, MASK, False)  # [BS]
        b_st = tl.dot(b_k, b_qt, input_precision=DOT_PRECISION) * qk_scale  # [BT, BS]
        if USE_G:
            b_gq = _load2(p_g + i_q * SG + r_q * SG, m_q, m_q, MASK, False).to(tl.float32) * LOG2E
            b_st += b_gq[None, :] - b_gk[:, None]
        b_pt = tl.exp2(b_st - b_lse[None, :])
        if MASK:
            b_d = r_q[None, :] + (i_q - k_start).to(tl.int32) - r_k[:, None]  # [BT, BS] query - key position
            m_t = (b_d >= 0) & m_q[None, :]
            if USE_WINDOW:
                m_t = m_t & (b_d < W)
            b_pt = tl.where(m_t, b_pt, 0.0)
        b_dv += tl.dot(b_pt.to(b_dot.dtype), tl.trans(b_dot), input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, b_dot, input_precision=DOT_PRECISION)  # [BT, BS]
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_qt.dtype), tl.trans(b_qt), input_precision=DOT_PRECISION)
        if USE_G:
            b_dg -= tl.sum(b_dst, 1)
    return b_dk, b_dv, b_dg


@lean_launch
@given_heuristics(USE_G="g", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=tile_configs(DKV_TILES), key=_KEY, prune_configs_by=_PRUNE)
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
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    BT: tl.constexpr,
    BS: tl.constexpr,
):
    # one program per block of BT keys and per key/value head: dk, dv summed over the G query heads of the group
    # (GQA) and written once in the input dtype; each query head's key-side dG
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    H: tl.constexpr = HQ // G
    i_t, i_b, i_h = _program(T, H, BT, IS_VARLEN, False)
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    k_start = i_tc * BT

    r_k = tl.arange(0, BT)  # [BT] key rows of this block
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_k = r_k < (T_n - k_start).to(tl.int32)
    p_dk = ((bos + k_start) * H + i_h) * K + r_k[:, None] * (H * K) + o_k[None, :]  # [BT, BK] offsets
    p_dv = ((bos + k_start) * H + i_h) * V + r_k[:, None] * (H * V) + o_v[None, :]  # [BT, BV] offsets
    b_k = _load2(k + p_dk, m_k[:, None], o_k[None, :] < K, True, K < BK)
    b_v = _load2(v + p_dv, m_k[:, None], o_v[None, :] < V, True, V < BV)
    qk_scale = scale * LOG2E

    # query block starts: [k_start, diag_hi) the diagonal (masked), [k_start + BT, full_hi) whole blocks
    # (every query after every key, inside the window and the sequence: no mask), [full_hi, hi) the window's far
    # edge and the sequence end (masked)
    hi = T_n
    lim = T_n  # queries below lim see every key of the block
    if USE_WINDOW:
        hi = tl.minimum(T_n, k_start + BT - 1 + W)
        lim = tl.minimum(T_n, k_start + W)
    diag_hi = tl.minimum(k_start + BT, hi)
    full_hi = k_start + BT + tl.maximum(lim - k_start - BT, 0) // BS * BS

    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for i_g in range(G):  # the query heads of this key/value head
        i_hq = i_h * G + i_g
        p_q, p_do = q + bos * HQ * K + i_hq * K, do + bos * HQ * V + i_hq * V
        p_lse, p_delta = lse + bos * HQ + i_hq, delta + bos * HQ + i_hq
        p_g = p_lse  # a float32 stand-in, never read without a gate
        if USE_G:
            p_g = g + bos * HQ + i_hq
        b_gk = tl.zeros([BT], dtype=tl.float32)
        if USE_G:
            b_gk = tl.load(p_g + (k_start + r_k) * HQ, mask=m_k, other=0.0).to(tl.float32) * LOG2E
        b_dg = tl.zeros([BT], dtype=tl.float32)
        b_dk, b_dv, b_dg = _dkv_queries(  # the diagonal
            b_k, b_v, b_gk, b_dk, b_dv, b_dg, p_q, p_do, p_lse, p_delta, p_g, k_start, k_start, diag_hi, T_n, W,
            qk_scale, HQ * K, HQ * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
        )  # fmt: skip
        b_dk, b_dv, b_dg = _dkv_queries(  # whole blocks
            b_k, b_v, b_gk, b_dk, b_dv, b_dg, p_q, p_do, p_lse, p_delta, p_g, k_start, k_start + BT, full_hi, T_n,
            W, qk_scale, HQ * K, HQ * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, False, DOT_PRECISION,
        )  # fmt: skip
        b_dk, b_dv, b_dg = _dkv_queries(  # the window's far edge and the sequence end
            b_k, b_v, b_gk, b_dk, b_dv, b_dg, p_q, p_do, p_lse, p_delta, p_g, k_start, full_hi, hi, T_n, W,
            qk_scale, HQ * K, HQ * V, HQ, K, V, BT, BS, BK, BV, USE_G, USE_WINDOW, True, DOT_PRECISION,
        )  # fmt: skip
        if USE_G:
            tl.store(dg + (bos + k_start + r_k) * HQ + i_hq, b_dg, mask=m_k)
    if K < BK:
        tl.store(dk + p_dk, (b_dk * scale).to(dk.dtype.element_ty), mask=m_k[:, None] & (o_k[None, :] < K))
    else:
        tl.store(dk + p_dk, (b_dk * scale).to(dk.dtype.element_ty), mask=m_k[:, None])
    if V < BV:
        tl.store(dv + p_dv, b_dv.to(dv.dtype.element_ty), mask=m_k[:, None] & (o_v[None, :] < V))
    else:
        tl.store(dv + p_dv, b_dv.to(dv.dtype.element_ty), mask=m_k[:, None])


def _launch_args(q, k, v, window_size, layout, per_kv_head=False):
    """``(grid, (T, W), meta)`` of the tiled kernels: a flat grid of blocks x heads (:func:`_program`), the blocks
    a function of the autotuned ``BT`` (dense) or the varlen layout's chunk count; query heads (key/value heads:
    ``per_kv_head``)."""
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[-1]
    BK, BV = _dims(K, V)
    heads = B * (H if per_kv_head else HQ)
    if layout.cu_seqlens is None:

        def grid(meta):
            return (triton.cdiv(T, meta["BT"]) * heads,)
    else:
        grid = (layout.row_chunks * heads,)
    meta = dict(
        HQ=HQ, G=HQ // H, K=K, V=V, BK=BK, BV=BV, USE_WINDOW=window_size is not None,
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
    """Forward kernel launch: ``o [B, T, HQ, V]`` (``q.dtype``) and ``lse [B, T, HQ]`` float32 (natural log).

    ``G``: ``[B, T, HQ]`` float32 per-sequence gate cumsum, or ``None``; ``sink_bias``: ``[HQ]`` or ``None``;
    ``layout``: :func:`attn_layout` (varlen: chunks of the varlen tile).
    """
    B, T, HQ, _ = q.shape
    o = empty(B, T, HQ, v.shape[-1], dtype=q.dtype, device=q.device)
    lse = empty(B, T, HQ, dtype=torch.float32, device=q.device)
    grid, (T, W), meta = _launch_args(q, k, v, window_size, layout)
    parallel_attn_fwd_kernel[grid](
        q, k, v, G, sink_bias, o, lse, layout.cu_seqlens, layout.chunk_indices, scale, T, W, **meta
    )  # fmt: skip
    return o, lse


def parallel_attn_bwd_delta(o: torch.Tensor, do: torch.Tensor, dlse: torch.Tensor | None) -> torch.Tensor:
    """``delta [B, T, HQ]`` float32 ``= sum_v o * do - dlse`` of ``o, do [B, T, HQ, V]``, ``dlse [B, T, HQ]``."""
    *rows, V = o.shape
    delta = empty(*rows, dtype=torch.float32, device=o.device)
    N = delta.numel()
    BV = max(16, next_power_of_2(V))
    BR = max(1, min(64, 4096 // BV))
    parallel_attn_bwd_delta_kernel[(triton.cdiv(N, BR),)](o, do, dlse, delta, N, V=V, BR=BR, BV=BV)
    return delta


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
    """Backward kernel launches: ``dq``, ``dk``, ``dv`` (in the input dtype; GQA groups summed in the dkv kernel)
    and ``dG [B, T, HQ]`` float32 (``None`` without a gate). ``delta``: :func:`parallel_attn_bwd_delta`."""
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[-1]
    grid, (T, W), meta = _launch_args(q, k, v, window_size, layout)
    grid_kv = _launch_args(q, k, v, window_size, layout, per_kv_head=True)[0]
    dq = empty(B, T, HQ, K, dtype=q.dtype, device=q.device)
    dk = empty(B, T, H, K, dtype=k.dtype, device=q.device)
    dv = empty(B, T, H, V, dtype=v.dtype, device=q.device)
    dg_q = dg_k = None
    if G is not None:
        dg_q = empty(B, T, HQ, dtype=torch.float32, device=q.device)
        dg_k = empty(B, T, HQ, dtype=torch.float32, device=q.device)
    cu, idx = layout.cu_seqlens, layout.chunk_indices
    parallel_attn_bwd_dq_kernel[grid](q, k, v, G, lse, delta, do, dq, dg_q, cu, idx, scale, T, W, **meta)
    parallel_attn_bwd_dkv_kernel[grid_kv](q, k, v, G, lse, delta, do, dk, dv, dg_k, cu, idx, scale, T, W, **meta)
    return dq, dk, dv, None if G is None else dg_q + dg_k


class ParallelAttentionFunction(torch.autograd.Function):
    """Triton softmax attention: ``(o, lse)`` from ``q, k, v`` and an optional log forget gate ``g``."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, sink_bias, scale, window_size, cu_seqlens, chunk_indices):
        layout = attn_layout(q, v, cu_seqlens, chunk_indices)
        G = None if g is None else global_cumsum(g, cu_seqlens)
        o, lse = parallel_attn_fwd(q, k, v, G, scale, window_size, layout, sink_bias)
        ctx.save_for_backward(q, k, v, o, G, lse, sink_bias)
        ctx.scale, ctx.window_size, ctx.layout, ctx.g_dtype = scale, window_size, layout, None if g is None else g.dtype
        return o, lse

    @staticmethod
    @contiguous
    def backward(ctx, do, dlse):
        q, k, v, o, G, lse, sink_bias = ctx.saved_tensors
        delta = parallel_attn_bwd_delta(o, do, dlse)  # [B, T, HQ]
        layout = ctx.layout
        dq, dk, dv, dG = parallel_attn_bwd(q, k, v, G, lse, delta, do, ctx.scale, ctx.window_size, layout)
        dg = dsink = None
        if dG is not None:
            dg = global_cumsum(dG, layout.cu_seqlens, reverse=True).to(ctx.g_dtype)
        if sink_bias is not None:  # the sink's probability p_i = exp(sink - lse_i): dsink = -sum_i p_i delta_i
            dsink = -(torch.exp(sink_bias.float() - lse) * delta).sum((0, 1)).to(sink_bias.dtype)
        return dq, dk, dv, dg, dsink, None, None, None, None


def attn_layout(
    q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None, chunk_indices: torch.Tensor | None
) -> ChunkLayout:
    """The launch layout of ``q [B, T, HQ, K]``: varlen batches in chunks of the varlen tile
    (:func:`fla.ops.attn.tiles.varlen_tile`); dense grids follow the autotuned tile instead.

    ``chunk_indices``: fla 0.6.0's precomputed ``prepare_chunk_indices(cu_seqlens, 64)`` (varlen only); accepted
    and checked for its shape, while the kernels use the indices of their own tile.
    """
    tile = varlen_tile(q.dtype, *_dims(q.shape[-1], v.shape[-1]))
    layout = ChunkLayout.build(q, cu_seqlens, tile)
    if cu_seqlens is not None and chunk_indices is not None:
        expected = int(((prepare_lens(cu_seqlens).long() + PUBLIC_CHUNK - 1) // PUBLIC_CHUNK).sum())
        if chunk_indices.dim() != 2 or tuple(chunk_indices.shape) != (expected, 2):
            raise ValueError(
                f"chunk_indices has shape {list(chunk_indices.shape)}, expected [{expected}, 2] "
                f"(prepare_chunk_indices(cu_seqlens, {PUBLIC_CHUNK}))"
            )
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
        chunk_indices: ``prepare_chunk_indices(cu_seqlens, 64)`` when already at hand (varlen only; checked,
            the kernels index their own tile).
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


__all__ = [
    "ParallelAttentionFunction", "attn_layout", "parallel_attn", "parallel_attn_bwd", "parallel_attn_bwd_delta",
    "parallel_attn_fwd",
]  # fmt: skip
