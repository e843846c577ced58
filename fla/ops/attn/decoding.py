"""One decoding step of causal softmax attention over a packed KV cache (fla 0.6.0's ``attn_decoding_one_step``).

Each sequence ``n`` of the packed keys ``k[0, bos_n:eos_n]`` has one query, at its last position: it attends
to the last ``window_size`` keys (all of them without a window) with the scores
``s_j = scale * q . k_j + G_last - G_j``, ``G`` the cumsum of the log forget gate ``g`` (optionally scaled by
``scale``, ``do_gate_scale``). One program per sequence and query head streams the key blocks (online softmax).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.inputs import check_decoding_inputs
from fla.ops.attn.naive import naive_attn_decoding
from fla.ops.common.cumsum import global_cumsum
from fla.ops.common.tuning import given_heuristics
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2
from fla.utils.tensors import contiguous


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
    USE_WINDOW: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_SINK: tl.constexpr,
):
    i_n, i_hq = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    lo = bos
    if USE_WINDOW:
        lo = tl.maximum(eos - W, bos)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    b_q = tl.load(q + (i_n * HQ + i_hq) * K + o_k, mask=m_k, other=0).to(tl.float32)  # [BK]
    if USE_G:
        b_gl = tl.load(g + (eos - 1) * HQ + i_hq, mask=eos > bos, other=0.0)  # G at the query

    b_m = tl.full([1], -1e30, dtype=tl.float32)  # running max (finite: see parallel.py)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_o = tl.zeros([BV], dtype=tl.float32)
    for i_s in range(lo, eos, BS):
        o_s = i_s + tl.arange(0, BS)  # [BS] key rows in the packed layout
        m_s = o_s < eos
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
    if HAS_SINK:  # exp(sink) joins the denominator only
        b_sink = tl.load(sink_bias + i_hq).to(tl.float32)
        b_mn = tl.maximum(b_m, b_sink)
        b_r = tl.exp(b_m - b_mn)
        b_l = b_l * b_r + tl.exp(b_sink - b_mn)
        b_o = b_o * b_r
    b_o = b_o / tl.where(b_l > 0, b_l, 1.0)  # no visible key: 0
    tl.store(o + (i_n * HQ + i_hq) * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)


@contiguous
def _decoding_triton(q, k, v, g, sink_bias, scale, cu_seqlens, gate_scale, window_size):
    N, HQ, K = q.shape[1], q.shape[2], q.shape[3]
    H, V = k.shape[2], v.shape[-1]
    G = None if g is None else global_cumsum(g, cu_seqlens, scale=gate_scale)
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    o = empty(1, N, HQ, V, dtype=q.dtype, device=q.device)
    attn_decoding_one_step_kernel[(N, HQ)](
        q, k, v, G, sink_bias, o, cu_seqlens, scale, 0 if window_size is None else window_size,
        HQ=HQ, G=HQ // H, K=K, V=V, BS=32 if max(BK, BV) > 64 else 64, BK=BK, BV=BV,
        USE_WINDOW=window_size is not None,
    )  # fmt: skip
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
