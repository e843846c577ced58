"""Selected branch of NSA in Triton: attention over the key blocks each query (group) selected.

Query ``i`` (position ``pos``) and key/value head ``h`` attend to the keys ``j <= pos`` of the blocks
``block_indices[i, h, :n]`` (``n = block_counts[i, h]`` or ``S``; entries ``< 0`` or after the query are skipped).

* forward / dq kernels: one program per query and key/value head, the group's query heads as rows (``BG``),
  one selected block of ``BS`` keys per step (online softmax in float32; dq from ``lse``);
* dkv kernel: the selection inverted into a per-(block, head) list of selecting queries (CSR, built in torch,
  :func:`selection_csr`), one program per block and head gathering ``BQ`` of its queries (x ``G`` heads) a step.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.parallel import parallel_attn_bwd_delta
from fla.ops.common.online_softmax import online_softmax_step
from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.ops.nsa.compression import NEG_INIT, group_blocks
from fla.ops.nsa.index import NSATables
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2


@lean_launch
@given_heuristics(USE_COUNTS="block_counts")
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BS", "S"])
@triton.jit
def nsa_slc_fwd_kernel(
    q,
    k,
    v,
    o,
    lse,
    block_indices,
    block_counts,
    tok_bos,
    tok_pos,
    scale,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    S: tl.constexpr,
    BS: tl.constexpr,
    BSP: tl.constexpr,
    BG: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_COUNTS: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_q, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    bos = tl.load(tok_bos + i_q).to(tl.int64)
    pos = tl.load(tok_pos + i_q).to(tl.int64)
    NS = S
    if USE_COUNTS:
        NS = tl.load(block_counts + i_q * H + i_h).to(tl.int32)

    o_g, o_k, o_v = tl.arange(0, BG), tl.arange(0, BK), tl.arange(0, BV)
    m_g, m_k, m_v = o_g < G, o_k < K, o_v < V
    o_hq = i_h * G + o_g
    b_q = tl.load(q + (i_q * HQ + o_hq[:, None]) * K + o_k[None, :], mask=m_g[:, None] & m_k[None, :], other=0)

    b_m = tl.full([BG], NEG_INIT, dtype=tl.float32)
    b_l = tl.zeros([BG], dtype=tl.float32)
    b_o = tl.zeros([BG, BV], dtype=tl.float32)
    for i_s in range(0, NS):
        i_b = tl.load(block_indices + (i_q * H + i_h) * S + i_s).to(tl.int64)
        if (i_b >= 0) & (i_b * BS <= pos):
            o_s = i_b * BS + tl.arange(0, BSP)  # [BSP] key positions in the sequence (the first BS real)
            m_s = (tl.arange(0, BSP) < BS) & (o_s <= pos)
            b_kt = tl.load(
                k + ((bos + o_s[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_s[None, :], other=0
            )  # [BK, BSP]
            b_v = tl.load(
                v + ((bos + o_s[:, None]) * H + i_h) * V + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0
            )  # [BSP, BV]
            b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BG, BSP]
            b_s = tl.where(m_s[None, :], b_s, float("-inf"))
            b_m, b_l, b_o = online_softmax_step(b_s, b_v, b_m, b_l, b_o, DOT_PRECISION)
    has = b_l > 0
    b_o = b_o / tl.where(has, b_l, 1.0)[:, None]
    b_lse = b_m + tl.log(tl.where(has, b_l, 1.0))
    tl.store(
        o + (i_q * HQ + o_hq[:, None]) * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_g[:, None] & m_v[None, :]
    )
    tl.store(lse + i_q * HQ + o_hq, b_lse, mask=m_g)


@lean_launch
@given_heuristics(USE_COUNTS="block_counts")
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BS", "S"])
@triton.jit
def nsa_slc_bwd_dq_kernel(
    q,
    k,
    v,
    lse,
    delta,
    do,
    dq,
    block_indices,
    block_counts,
    tok_bos,
    tok_pos,
    scale,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    S: tl.constexpr,
    BS: tl.constexpr,
    BSP: tl.constexpr,
    BG: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_COUNTS: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_q, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    bos = tl.load(tok_bos + i_q).to(tl.int64)
    pos = tl.load(tok_pos + i_q).to(tl.int64)
    NS = S
    if USE_COUNTS:
        NS = tl.load(block_counts + i_q * H + i_h).to(tl.int32)

    o_g, o_k, o_v = tl.arange(0, BG), tl.arange(0, BK), tl.arange(0, BV)
    m_g, m_k, m_v = o_g < G, o_k < K, o_v < V
    o_hq = i_h * G + o_g
    o_qk = (i_q * HQ + o_hq[:, None]) * K + o_k[None, :]
    m_qk = m_g[:, None] & m_k[None, :]
    b_q = tl.load(q + o_qk, mask=m_qk, other=0)
    b_do = tl.load(do + (i_q * HQ + o_hq[:, None]) * V + o_v[None, :], mask=m_g[:, None] & m_v[None, :], other=0)
    b_lse = tl.load(lse + i_q * HQ + o_hq, mask=m_g, other=0.0)
    b_delta = tl.load(delta + i_q * HQ + o_hq, mask=m_g, other=0.0)

    b_dq = tl.zeros([BG, BK], dtype=tl.float32)
    for i_s in range(0, NS):
        i_b = tl.load(block_indices + (i_q * H + i_h) * S + i_s).to(tl.int64)
        if (i_b >= 0) & (i_b * BS <= pos):
            o_s = i_b * BS + tl.arange(0, BSP)
            m_s = (tl.arange(0, BSP) < BS) & (o_s <= pos)
            b_kt = tl.load(
                k + ((bos + o_s[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_s[None, :], other=0
            )  # [BK, BSP]
            b_vt = tl.load(
                v + ((bos + o_s[None, :]) * H + i_h) * V + o_v[:, None], mask=m_v[:, None] & m_s[None, :], other=0
            )  # [BV, BSP]
            b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale
            b_p = tl.where(m_s[None, :], tl.exp(b_s - b_lse[:, None]), 0.0)  # [BG, BSP]
            b_dp = tl.dot(b_do, b_vt, input_precision=DOT_PRECISION)
            b_ds = b_p * (b_dp - b_delta[:, None])
            b_dq += tl.dot(b_ds.to(b_kt.dtype), tl.trans(b_kt), input_precision=DOT_PRECISION)
    tl.store(dq + o_qk, (b_dq * scale).to(dq.dtype.element_ty), mask=m_qk)


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BSP"])
@triton.jit
def nsa_slc_bwd_dkv_kernel(
    q,
    k,
    v,
    lse,
    delta,
    do,
    dk,
    dv,
    csr_offsets,
    csr_queries,
    blk_start,
    blk_end,
    scale,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BSP: tl.constexpr,
    BGD: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_b, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    start = tl.load(blk_start + i_b).to(tl.int64)
    end = tl.load(blk_end + i_b).to(tl.int64)
    lo = tl.load(csr_offsets + i_b * H + i_h).to(tl.int64)
    hi = tl.load(csr_offsets + i_b * H + i_h + 1).to(tl.int64)

    o_j = start + tl.arange(0, BSP)  # [BSP] flat key index (masked at the block's end)
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_j, m_k, m_v = o_j < end, o_k < K, o_v < V
    o_jk = (o_j[:, None] * H + i_h) * K + o_k[None, :]
    o_jv = (o_j[:, None] * H + i_h) * V + o_v[None, :]
    m_jk, m_jv = m_j[:, None] & m_k[None, :], m_j[:, None] & m_v[None, :]
    b_k = tl.load(k + o_jk, mask=m_jk, other=0)  # [BSP, BK]
    b_v = tl.load(v + o_jv, mask=m_jv, other=0)  # [BSP, BV]
    b_dk = tl.zeros([BSP, BK], dtype=tl.float32)
    b_dv = tl.zeros([BSP, BV], dtype=tl.float32)
    o_r = tl.arange(0, BQ * BGD)  # [R] rows: selecting query x head of the group
    for i_e in range(lo, hi, BQ):
        o_e = i_e + o_r // BGD
        m_r = (o_e < hi) & (o_r % BGD < G)
        o_i = tl.load(csr_queries + o_e, mask=m_r, other=0).to(tl.int64)  # [R] flat query index (= its key index)
        o_hq = i_h * G + o_r % BGD
        b_qt = tl.load(
            q + (o_i[None, :] * HQ + o_hq[None, :]) * K + o_k[:, None], mask=m_k[:, None] & m_r[None, :], other=0
        )
        b_dot = tl.load(
            do + (o_i[None, :] * HQ + o_hq[None, :]) * V + o_v[:, None], mask=m_v[:, None] & m_r[None, :], other=0
        )
        b_lse = tl.load(lse + o_i * HQ + o_hq, mask=m_r, other=0.0)
        b_delta = tl.load(delta + o_i * HQ + o_hq, mask=m_r, other=0.0)
        b_st = tl.dot(b_k, b_qt, input_precision=DOT_PRECISION) * scale  # [BSP, R]
        m_t = (o_j[:, None] <= o_i[None, :]) & m_j[:, None] & m_r[None, :]
        b_pt = tl.where(m_t, tl.exp(b_st - b_lse[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_dot.dtype), tl.trans(b_dot), input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, b_dot, input_precision=DOT_PRECISION)
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_qt.dtype), tl.trans(b_qt), input_precision=DOT_PRECISION)
    tl.store(dk + o_jk, b_dk * scale, mask=m_jk)
    tl.store(dv + o_jv, b_dv, mask=m_jv)


def selection_csr(block_indices, block_counts, tables: NSATables, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert the selection: ``(offsets [NB * H + 1], queries [E])`` int32, the flat queries selecting block ``b``
    under head ``h`` being ``queries[offsets[b * H + h] : offsets[b * H + h + 1]]`` (in query order)."""
    NQ, _, S = block_indices.shape
    idx = block_indices.long()
    valid = (idx >= 0) & (idx * tables.block_size <= tables.tok_pos.long()[:, None, None])
    if block_counts is not None:
        valid &= torch.arange(S, device=idx.device) < block_counts.long()[..., None]
    key = (tables.tok_boc.long()[:, None, None] + idx) * H + torch.arange(H, device=idx.device)[None, :, None]
    query = torch.arange(NQ, device=idx.device)[:, None, None].expand_as(idx)
    key, query = key[valid], query[valid]
    order = torch.sort(key, stable=True).indices
    counts = torch.bincount(key, minlength=tables.num_blocks * H)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return offsets.to(torch.int32), query[order].to(torch.int32)


def _meta(q, k, v, block_size: int) -> tuple[dict, dict]:
    H, K, V = k.shape[1], k.shape[2], v.shape[2]
    G = q.shape[1] // H
    meta = dict(H=H, G=G, K=K, V=V, BSP=max(16, next_power_of_2(block_size)), DOT_PRECISION=dot_precision(q.dtype))
    return meta, group_blocks(G, K, V)


def nsa_slc_fwd(q, k, v, block_indices, block_counts, tables: NSATables, scale: float):
    """q ``[NQ, HQ, K]``, k ``[NK, H, K]``, v ``[NK, H, V]``, block_indices ``[NQ, H, S]``, block_counts ``[NQ, H]``
    or ``None`` -> ``o [NQ, HQ, V]`` (q.dtype), ``lse [NQ, HQ]`` float32."""
    NQ, HQ = q.shape[:2]
    meta, blocks = _meta(q, k, v, tables.block_size)
    o = empty(NQ, HQ, v.shape[-1], dtype=q.dtype, device=q.device)
    lse = empty(NQ, HQ, dtype=torch.float32, device=q.device)
    if NQ:
        nsa_slc_fwd_kernel[(NQ, meta["H"])](
            q, k, v, o, lse, block_indices, block_counts, tables.tok_bos, tables.tok_pos, scale,
            **meta, BS=tables.block_size, S=block_indices.shape[-1], BG=blocks["BG"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    return o, lse


def nsa_slc_bwd(q, k, v, lse, delta, do, block_indices, block_counts, tables: NSATables, scale: float):
    """``(dq [NQ, HQ, K] q.dtype, dk [NK, H, K] float32, dv [NK, H, V] float32)``."""
    NQ = q.shape[0]
    meta, blocks = _meta(q, k, v, tables.block_size)
    dq = empty(*q.shape, dtype=q.dtype, device=q.device)
    dk = empty(*k.shape, dtype=torch.float32, device=q.device)  # every key is in exactly one block: all written
    dv = empty(*v.shape, dtype=torch.float32, device=q.device)
    if NQ:
        nsa_slc_bwd_dq_kernel[(NQ, meta["H"])](
            q, k, v, lse, delta, do, dq, block_indices, block_counts, tables.tok_bos, tables.tok_pos, scale,
            **meta, BS=tables.block_size, S=block_indices.shape[-1], BG=blocks["BG"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    if tables.num_blocks:
        offsets, queries = selection_csr(block_indices, block_counts, tables, meta["H"])
        nsa_slc_bwd_dkv_kernel[(tables.num_blocks, meta["H"])](
            q, k, v, lse, delta, do, dk, dv, offsets, queries, tables.blk_start, tables.blk_end, scale,
            **meta, BGD=blocks["BGD"], BQ=blocks["BQ"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    return dq, dk, dv


class NSASelectionFunction(torch.autograd.Function):
    """Triton selected attention on flat ``q``, ``k``, ``v``; the block choice carries no gradient."""

    @staticmethod
    def forward(ctx, q, k, v, block_indices, block_counts, tables, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o, lse = nsa_slc_fwd(q, k, v, block_indices, block_counts, tables, scale)
        ctx.save_for_backward(q, k, v, o, lse, block_indices, block_counts)
        ctx.tables, ctx.scale = tables, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, block_indices, block_counts = ctx.saved_tensors
        if not ctx.tables.same_layout:
            raise NotImplementedError("NSA backward needs queries and keys of the same lengths (no cached prefix)")
        do = do.contiguous()
        delta = parallel_attn_bwd_delta(o.contiguous(), do, None)  # [NQ, HQ] float32: rowsum(o * do)
        dq, dk, dv = nsa_slc_bwd(q, k, v, lse, delta, do, block_indices, block_counts, ctx.tables, ctx.scale)
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


__all__ = ["NSASelectionFunction", "nsa_slc_bwd", "nsa_slc_fwd", "selection_csr"]
