"""One decoding step of causal softmax attention over a packed KV cache (fla 0.6.0's ``attn_decoding_one_step``).

Each sequence ``n`` of the packed keys ``k[0, bos_n:eos_n]`` has one query, at its last position: it attends
to the last ``window_size`` keys (all of them without a window) with the scores
``s_j = scale * q . k_j + G_last - G_j``, ``G`` the cumsum of the log forget gate ``g`` (optionally scaled by
``scale``, ``do_gate_scale``).

Split-KV (flash-decoding): one program per sequence, query head and split streams its share of the key blocks
(online softmax) and, with several splits, leaves its running max ``m``, sum ``l`` and unnormalized output; a
second kernel merges the splits (``m = max m_s``, ``l = sum l_s exp(m_s - m)``, ``o = sum o_s exp(m_s - m) / l``).
A decode batch has few (sequence, head) pairs: without splits a long cache is streamed by a handful of programs
per SM, too few loads in flight to reach the memory bandwidth. :func:`decode_splits` picks the count.

Grouped query heads (GQA/MQA, ``G = HQ / H > 1``): one program serves the ``G`` query heads of a key/value head
(:func:`attn_decoding_group_kernel`, rows of a ``[BG, K]`` query tile, ``tl.dot`` products), so the group's keys
and values are read once instead of ``G`` times (the step is bound by that read).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.inputs import check_decoding_inputs
from fla.ops.attn.naive import naive_attn_decoding
from fla.ops.common.cumsum import global_cumsum
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2
from fla.utils.tensors import contiguous


@triton.jit
def _split_keys(cu_seqlens, i_n, i_sp, W, NSPLIT: tl.constexpr, BS: tl.constexpr, USE_WINDOW: tl.constexpr):
    """``(bos, eos, start, end)``: sequence ``i_n``'s packed key rows and split ``i_sp``'s share of its visible
    ones (the last ``W`` with a window), whole blocks of ``BS`` keys (``start >= end``: an empty split)."""
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    lo = bos
    if USE_WINDOW:
        lo = tl.maximum(eos - W, bos)
    span = tl.cdiv(tl.cdiv(eos - lo, NSPLIT), BS) * BS
    start = lo + i_sp * span
    return bos, eos, start, tl.minimum(start + span, eos)


@lean_launch
@given_heuristics(USE_G="g", HAS_SINK="sink_bias")
@triton.jit
def attn_decoding_one_step_kernel(
    q,
    k,
    v,
    g,
    sink_bias,
    o,
    o_part,
    ml_part,
    cu_seqlens,
    scale,
    W,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NSPLIT: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_SINK: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_hq, i_sp = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    bos, eos, start, end = _split_keys(cu_seqlens, i_n, i_sp, W, NSPLIT, BS, USE_WINDOW)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    b_q = tl.load(q + (i_n * HQ + i_hq) * K + o_k, mask=m_k, other=0).to(tl.float32)  # [BK]
    if USE_G:
        b_gl = tl.load(g + (eos - 1) * HQ + i_hq, mask=eos > bos, other=0.0)  # G at the query

    b_m = tl.full([1], -1e30, dtype=tl.float32)  # running max (finite: see parallel.py)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_o = tl.zeros([BV], dtype=tl.float32)
    for i_s in range(start, end, BS):
        o_s = i_s + tl.arange(0, BS)  # [BS] key rows in the packed layout
        m_s = o_s < end
        b_k = tl.load(k + (o_s[:, None] * H + i_h) * K + o_k[None, :], mask=m_s[:, None] & m_k[None, :], other=0)
        b_s = tl.sum(b_k.to(tl.float32) * b_q[None, :], 1) * scale  # [BS]
        if USE_G:
            b_s += b_gl - tl.load(g + o_s * HQ + i_hq, mask=m_s, other=0.0)
        b_s = tl.where(m_s, b_s, float("-inf"))
        b_mn = tl.maximum(b_m, tl.max(b_s, 0))
        b_r = tl.exp(b_m - b_mn)  # [1]
        b_p = tl.exp(b_s - b_mn)  # [BS]
        b_v = tl.load(v + (o_s[:, None] * H + i_h) * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0)
        b_o = b_o * b_r + tl.sum(b_p[:, None] * b_v.to(tl.float32), 0)
        b_l = b_l * b_r + tl.sum(b_p, 0)
        b_m = b_mn
    o_hq = i_hq + tl.arange(0, 1)  # [1]: this query head as the one row of the shared epilogues
    if NSPLIT == 1:
        _finish_rows(b_m, b_l, b_o[None, :], sink_bias, o, i_n, o_hq, o_hq < HQ, o_v, m_v, HQ, V, HAS_SINK)
    else:
        _store_partials(b_m, b_l, b_o[None, :], o_part, ml_part, i_n, o_hq, o_hq < HQ, i_sp, o_v, m_v, HQ, V, NSPLIT)


@lean_launch
@given_heuristics(USE_G="g", HAS_SINK="sink_bias")
@triton.jit
def attn_decoding_group_kernel(
    q,
    k,
    v,
    g,
    sink_bias,
    o,
    o_part,
    ml_part,
    cu_seqlens,
    scale,
    W,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BS: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    BG: tl.constexpr,
    NSPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_WINDOW: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_SINK: tl.constexpr,
):
    # one program per sequence, key/value head and split: the G query heads of the group as rows (BG >= 16 for
    # tl.dot; rows past G are masked)
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_h, i_sp = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    H: tl.constexpr = HQ // G
    bos, eos, start, end = _split_keys(cu_seqlens, i_n, i_sp, W, NSPLIT, BS, USE_WINDOW)
    o_g, o_k, o_v = tl.arange(0, BG), tl.arange(0, BK), tl.arange(0, BV)
    m_g, m_k, m_v = o_g < G, o_k < K, o_v < V
    o_hq = i_h * G + o_g  # [BG] the group's query heads
    b_q = tl.load(q + (i_n * HQ + o_hq[:, None]) * K + o_k[None, :], mask=m_g[:, None] & m_k[None, :], other=0)
    if USE_G:
        b_gl = tl.load(g + (eos - 1) * HQ + o_hq, mask=m_g & (o_g * 0 + eos > bos), other=0.0)  # [BG] G at the query

    b_m = tl.full([BG], -1e30, dtype=tl.float32)
    b_l = tl.zeros([BG], dtype=tl.float32)
    b_o = tl.zeros([BG, BV], dtype=tl.float32)
    for i_s in range(start, end, BS):
        o_s = i_s + tl.arange(0, BS)  # [BS]
        m_s = o_s < end
        b_kt = tl.load(k + (o_s[None, :] * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_s[None, :], other=0)
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BG, BS]
        if USE_G:
            m_gs = m_g[:, None] & m_s[None, :]
            b_s += b_gl[:, None] - tl.load(g + o_s[None, :] * HQ + o_hq[:, None], mask=m_gs, other=0.0)
        b_s = tl.where(m_s[None, :], b_s, float("-inf"))
        b_mn = tl.maximum(b_m, tl.max(b_s, 1))
        b_r = tl.exp(b_m - b_mn)  # [BG]
        b_p = tl.exp(b_s - b_mn[:, None])  # [BG, BS]
        b_v = tl.load(v + (o_s[:, None] * H + i_h) * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0)
        b_o = b_o * b_r[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
        b_l = b_l * b_r + tl.sum(b_p, 1)
        b_m = b_mn
    if NSPLIT == 1:
        _finish_rows(b_m, b_l, b_o, sink_bias, o, i_n, o_hq, m_g, o_v, m_v, HQ, V, HAS_SINK)
    else:
        _store_partials(b_m, b_l, b_o, o_part, ml_part, i_n, o_hq, m_g, i_sp, o_v, m_v, HQ, V, NSPLIT)


@triton.jit
def _finish_rows(b_m, b_l, b_o, sink_bias, o, i_n, o_hq, m_r, o_v, m_v, HQ: tl.constexpr, V: tl.constexpr,
                 HAS_SINK: tl.constexpr):  # fmt: skip
    """Store ``o = b_o / b_l`` for query heads ``o_hq [R]`` (valid ``m_r``) of sequence ``i_n``: ``b_o [R, BV]``,
    running max ``b_m [R]`` and sum ``b_l [R]``, the sink's ``exp(sink)`` joining each denominator first."""
    if HAS_SINK:  # exp(sink) joins the denominator only
        b_sink = tl.load(sink_bias + o_hq, mask=m_r, other=0.0).to(tl.float32)  # [R]
        b_mn = tl.maximum(b_m, b_sink)
        b_r = tl.exp(b_m - b_mn)
        b_l = b_l * b_r + tl.exp(b_sink - b_mn)
        b_o = b_o * b_r[:, None]
    b_o = b_o / tl.where(b_l > 0, b_l, 1.0)[:, None]  # no visible key: 0
    p_o = o + (i_n * HQ + o_hq[:, None]) * V + o_v[None, :]
    tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_r[:, None] & m_v[None, :])


@triton.jit
def _store_partials(b_m, b_l, b_o, o_part, ml_part, i_n, o_hq, m_r, i_sp, o_v, m_v, HQ: tl.constexpr,
                    V: tl.constexpr, NSPLIT: tl.constexpr):  # fmt: skip
    """Split ``i_sp``'s running max ``b_m [R]``, sum ``b_l [R]`` and unnormalized ``b_o [R, BV]`` of query heads
    ``o_hq [R]`` (valid ``m_r``) of sequence ``i_n``, for :func:`attn_decoding_merge_kernel`."""
    i_part = (i_n * HQ + o_hq) * NSPLIT + i_sp  # [R]
    tl.store(o_part + i_part[:, None] * V + o_v[None, :], b_o, mask=m_r[:, None] & m_v[None, :])
    tl.store(ml_part + i_part * 2, b_m, mask=m_r)
    tl.store(ml_part + i_part * 2 + 1, b_l, mask=m_r)


@lean_launch
@given_heuristics(HAS_SINK="sink_bias")
@triton.jit
def attn_decoding_merge_kernel(
    sink_bias,
    o,
    o_part,
    ml_part,
    HQ: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    NSPLIT: tl.constexpr,
    HAS_SINK: tl.constexpr,
):
    """Merge the ``NSPLIT`` partial softmax sums of query head ``i_hq`` of sequence ``i_n`` (empty splits hold
    ``m = -1e30, l = 0``) and store the output."""
    i_n, i_hq = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_p = (i_n * HQ + i_hq) * NSPLIT + tl.arange(0, NSPLIT)  # [NSPLIT]
    o_v = tl.arange(0, BV)
    m_v = o_v < V
    b_ms = tl.load(ml_part + o_p * 2)  # [NSPLIT]
    b_ls = tl.load(ml_part + o_p * 2 + 1)
    b_m = tl.max(b_ms, 0)
    b_w = tl.exp(b_ms - b_m)  # [NSPLIT]
    b_os = tl.load(o_part + o_p[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0.0)  # [NSPLIT, BV]
    b_o = tl.sum(b_os * b_w[:, None], 0)  # [BV]
    b_l = tl.sum(b_ls * b_w, 0)
    o_hq = i_hq + tl.arange(0, 1)  # [1]: one row for the shared epilogue
    b_m1, b_l1 = tl.full([1], 0.0, tl.float32) + b_m, tl.full([1], 0.0, tl.float32) + b_l
    _finish_rows(b_m1, b_l1, b_o[None, :], sink_bias, o, i_n, o_hq, o_hq < HQ, o_v, m_v, HQ, V, HAS_SINK)


def decode_splits(num_seqs: int, num_heads: int, num_keys: int, device: torch.device) -> int:
    """How many splits each (sequence, query head) pair's keys get: enough programs for about four per SM
    (``device``'s count; 8 SMs on a CPU, the interpreter), none shorter than 256 keys on average (``num_keys``
    packed keys over ``num_seqs`` sequences), a power of two up to 64."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    want = cdiv(4 * sms, num_seqs * num_heads)  # splits that fill the device
    fit = cdiv(num_keys, num_seqs * 256)  # splits of >= 256 keys on average
    return min(64, next_power_of_2(max(1, min(want, fit))))


@contiguous
def _decoding_triton(q, k, v, g, sink_bias, scale, cu_seqlens, gate_scale, window_size, num_splits=None):
    N, HQ, K = q.shape[1], q.shape[2], q.shape[3]
    H, V = k.shape[2], v.shape[-1]
    Gc = None if g is None else global_cumsum(g, cu_seqlens, scale=gate_scale)  # [1, L, HQ] gate cumsum
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    G = HQ // H
    # grouped query heads: one program per key/value head serves the group
    NSPLIT = decode_splits(N, HQ if G == 1 else H, k.shape[1], q.device) if num_splits is None else num_splits
    o = empty(1, N, HQ, V, dtype=q.dtype, device=q.device)
    o_part = ml_part = None
    if NSPLIT > 1:
        o_part = empty(N, HQ, NSPLIT, V, dtype=torch.float32, device=q.device)
        ml_part = empty(N, HQ, NSPLIT, 2, dtype=torch.float32, device=q.device)
    W = 0 if window_size is None else window_size
    meta = dict(HQ=HQ, G=G, K=K, V=V, BS=32 if max(BK, BV) > 64 else 64, BK=BK, BV=BV, NSPLIT=NSPLIT,
                USE_WINDOW=window_size is not None)  # fmt: skip
    if G == 1:
        attn_decoding_one_step_kernel[(N, HQ, NSPLIT)](
            q, k, v, Gc, sink_bias, o, o_part, ml_part, cu_seqlens, scale, W, **meta
        )  # fmt: skip
    else:
        attn_decoding_group_kernel[(N, H, NSPLIT)](
            q, k, v, Gc, sink_bias, o, o_part, ml_part, cu_seqlens, scale, W, BG=max(16, next_power_of_2(G)),
            DOT_PRECISION=dot_precision(q.dtype), **meta,
        )  # fmt: skip
    if NSPLIT > 1:
        attn_decoding_merge_kernel[(N, HQ)](sink_bias, o, o_part, ml_part, HQ=HQ, V=V, BV=BV, NSPLIT=NSPLIT)
    return o


def _decoding_torch(q, k, v, g, sink_bias, scale, cu_seqlens, gate_scale, window_size):
    g = None if g is None else g * gate_scale
    return naive_attn_decoding(q, k, v, g, scale, cu_seqlens, window_size=window_size, sink_bias=sink_bias)


def attn_decoding_one_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    do_gate_scale: bool = False,
    *,
    window_size: int | None = None,
    sink_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of one new query per sequence over its cached keys (inference only, no gradient).

    Args:
        q: ``[1, N, HQ, K]``, the query of sequence ``n`` at row ``n``.
        k: ``[1, L, H, K]``; v: ``[1, L, H, V]``: every sequence's keys/values packed, the query's own last.
        g: ``[1, L, HQ]`` log forget gates of the keys (or ``None``).
        scale: default ``K ** -0.5``.
        cu_seqlens: ``[N+1]`` bounds of the key sequences (required).
        do_gate_scale: multiply ``g`` by ``scale`` too (the PaTH-FoX convention).
        window_size: attend to the last ``window_size`` keys only (``0``: none, output 0; ``None``: all).
        sink_bias: ``[HQ]`` attention-sink logits: ``exp(sink_bias)`` joins each denominator (no value).
    Returns:
        ``o [1, N, HQ, V]`` in ``q.dtype``.
    """
    check_decoding_inputs(q, k, v, g, cu_seqlens, window_size, sink_bias)
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    gate_scale = scale if do_gate_scale else 1.0
    args = (q, k, v, g, sink_bias, scale, cu_seqlens, gate_scale, window_size)
    return dispatch((q, k, v, g, sink_bias), _decoding_torch, _decoding_triton, *args)


__all__ = ["attn_decoding_one_step"]
