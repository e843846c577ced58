"""Compressed branch of NSA in Triton: attention over the block means of the keys and values.

Query ``i`` (position ``pos`` in its sequence) sees the ``NC = (pos + 1) // BS`` complete blocks of its sequence:
``o_i = sum_c softmax_c(scale q_i . kc_c) vc_c`` and ``lse_i``; with no complete block ``o_i = 0``, ``lse_i = 0``
(fla's convention). Flat layout and tables: :mod:`fla.ops.nsa.index`.

* forward / dq kernels: one program per query and key/value head, the ``G`` query heads of the group as the
  rows of the tiles (padded to ``BG >= 16``), looping over the visible blocks ``BC`` at a time;
* dkv kernel: one program per ``BC`` consecutive blocks and key/value head, looping over the queries that see
  any of them (``BQ`` queries x ``G`` heads per tile), probabilities recomputed from ``lse``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.parallel import parallel_attn_bwd_delta
from fla.ops.common.online_softmax import online_softmax_step
from fla.ops.common.tuning import autotune_configs, dot_precision
from fla.ops.nsa.index import NSATables, build_tables, flat_tokens
from fla.ops.nsa.inputs import check_branch_inputs
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2

NEG_INIT = tl.constexpr(-1e30)  # finite initial running max: fully masked rows give exp(-inf) = 0, never nan
BC = 16  # blocks per tile


def group_blocks(G: int, K: int, V: int) -> dict:
    """Tile sizes shared by the NSA kernels: ``BG`` (group rows, >= 16), ``BGD`` (group rows of the dkv tiles),
    ``BQ`` (queries per dkv tile), ``BK``, ``BV``."""
    BGD = next_power_of_2(G)
    return dict(
        BG=max(16, BGD), BGD=BGD, BQ=max(1, 64 // BGD), BK=max(16, next_power_of_2(K)), BV=max(16, next_power_of_2(V))
    )


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BS"])
@triton.jit
def nsa_cmp_fwd_kernel(
    q,
    kc,
    vc,
    o,
    lse,
    tok_pos,
    tok_boc,
    scale,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BS: tl.constexpr,
    BC: tl.constexpr,
    BG: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_q, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    pos = tl.load(tok_pos + i_q).to(tl.int64)
    boc = tl.load(tok_boc + i_q).to(tl.int64)
    NC = (pos + 1) // BS  # complete blocks visible to this query

    o_g, o_k, o_v = tl.arange(0, BG), tl.arange(0, BK), tl.arange(0, BV)  # [BG], [BK], [BV]
    m_g, m_k, m_v = o_g < G, o_k < K, o_v < V
    o_hq = i_h * G + o_g  # [BG] query heads of the group
    b_q = tl.load(q + (i_q * HQ + o_hq[:, None]) * K + o_k[None, :], mask=m_g[:, None] & m_k[None, :], other=0)

    b_m = tl.full([BG], NEG_INIT, dtype=tl.float32)  # running max
    b_l = tl.zeros([BG], dtype=tl.float32)  # running sum of exp(s - m)
    b_o = tl.zeros([BG, BV], dtype=tl.float32)
    for i_c in range(0, NC, BC):
        o_c = i_c + tl.arange(0, BC)  # [BC] blocks
        m_c = o_c < NC
        b_kt = tl.load(
            kc + ((boc + o_c[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_c[None, :], other=0
        )  # [BK, BC]
        b_v = tl.load(
            vc + ((boc + o_c[:, None]) * H + i_h) * V + o_v[None, :], mask=m_c[:, None] & m_v[None, :], other=0
        )  # [BC, BV]
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BG, BC]
        b_s = tl.where(m_c[None, :], b_s, float("-inf"))
        b_m, b_l, b_o = online_softmax_step(b_s, b_v, b_m, b_l, b_o, DOT_PRECISION)
    has = b_l > 0
    b_o = b_o / tl.where(has, b_l, 1.0)[:, None]
    b_lse = tl.where(has, b_m + tl.log(tl.where(has, b_l, 1.0)), 0.0)
    tl.store(
        o + (i_q * HQ + o_hq[:, None]) * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_g[:, None] & m_v[None, :]
    )
    tl.store(lse + i_q * HQ + o_hq, b_lse, mask=m_g)


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BS"])
@triton.jit
def nsa_cmp_bwd_dq_kernel(
    q,
    kc,
    vc,
    lse,
    delta,
    do,
    dq,
    tok_pos,
    tok_boc,
    scale,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BS: tl.constexpr,
    BC: tl.constexpr,
    BG: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_q, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    pos = tl.load(tok_pos + i_q).to(tl.int64)
    boc = tl.load(tok_boc + i_q).to(tl.int64)
    NC = (pos + 1) // BS

    o_g, o_k, o_v = tl.arange(0, BG), tl.arange(0, BK), tl.arange(0, BV)
    m_g, m_k, m_v = o_g < G, o_k < K, o_v < V
    o_hq = i_h * G + o_g
    o_qk = (i_q * HQ + o_hq[:, None]) * K + o_k[None, :]  # [BG, BK]
    m_qk = m_g[:, None] & m_k[None, :]
    b_q = tl.load(q + o_qk, mask=m_qk, other=0)
    b_do = tl.load(do + (i_q * HQ + o_hq[:, None]) * V + o_v[None, :], mask=m_g[:, None] & m_v[None, :], other=0)
    b_lse = tl.load(lse + i_q * HQ + o_hq, mask=m_g, other=0.0)  # [BG]
    b_delta = tl.load(delta + i_q * HQ + o_hq, mask=m_g, other=0.0)  # [BG]

    b_dq = tl.zeros([BG, BK], dtype=tl.float32)
    for i_c in range(0, NC, BC):
        o_c = i_c + tl.arange(0, BC)
        m_c = o_c < NC
        b_kt = tl.load(
            kc + ((boc + o_c[None, :]) * H + i_h) * K + o_k[:, None], mask=m_k[:, None] & m_c[None, :], other=0
        )  # [BK, BC]
        b_vt = tl.load(
            vc + ((boc + o_c[None, :]) * H + i_h) * V + o_v[:, None], mask=m_v[:, None] & m_c[None, :], other=0
        )  # [BV, BC]
        b_s = tl.dot(b_q, b_kt, input_precision=DOT_PRECISION) * scale  # [BG, BC]
        b_p = tl.where(m_c[None, :], tl.exp(b_s - b_lse[:, None]), 0.0)
        b_dp = tl.dot(b_do, b_vt, input_precision=DOT_PRECISION)  # [BG, BC]
        b_ds = b_p * (b_dp - b_delta[:, None])
        b_dq += tl.dot(b_ds.to(b_kt.dtype), tl.trans(b_kt), input_precision=DOT_PRECISION)
    tl.store(dq + o_qk, (b_dq * scale).to(dq.dtype.element_ty), mask=m_qk)


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(2, 4), stages=(1, 2)), key=["G", "K", "V", "BS"])
@triton.jit
def nsa_cmp_bwd_dkv_kernel(
    q,
    kc,
    vc,
    lse,
    delta,
    do,
    dkc,
    dvc,
    blk_first_q,
    blk_seq_end,
    scale,
    NB,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BS: tl.constexpr,
    BC: tl.constexpr,
    BGD: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    HQ: tl.constexpr = H * G
    o_c = i_t * BC + tl.arange(0, BC)  # [BC] global blocks of this tile
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_c, m_k, m_v = o_c < NB, o_k < K, o_v < V
    b_first = tl.load(blk_first_q + o_c, mask=m_c, other=2**30).to(tl.int64)  # [BC] first query seeing the block
    b_end = tl.load(blk_seq_end + o_c, mask=m_c, other=0).to(tl.int64)  # [BC] end of the block's sequence
    lo, hi = tl.min(b_first, 0), tl.max(b_end, 0)

    o_ck = (o_c[:, None] * H + i_h) * K + o_k[None, :]  # [BC, BK]
    o_cv = (o_c[:, None] * H + i_h) * V + o_v[None, :]  # [BC, BV]
    m_ck, m_cv = m_c[:, None] & m_k[None, :], m_c[:, None] & m_v[None, :]
    b_k = tl.load(kc + o_ck, mask=m_ck, other=0)
    b_v = tl.load(vc + o_cv, mask=m_cv, other=0)
    b_dk = tl.zeros([BC, BK], dtype=tl.float32)
    b_dv = tl.zeros([BC, BV], dtype=tl.float32)
    o_r = tl.arange(0, BQ * BGD)  # [R] rows: query-major, the group's heads inside
    for i_s in range(lo, hi, BQ):
        o_i = i_s + o_r // BGD  # [R] flat query index
        o_hq = i_h * G + o_r % BGD
        m_r = (o_i < hi) & (o_r % BGD < G)
        b_qt = tl.load(
            q + (o_i[None, :] * HQ + o_hq[None, :]) * K + o_k[:, None], mask=m_k[:, None] & m_r[None, :], other=0
        )
        b_dot = tl.load(
            do + (o_i[None, :] * HQ + o_hq[None, :]) * V + o_v[:, None], mask=m_v[:, None] & m_r[None, :], other=0
        )
        b_lse = tl.load(lse + o_i * HQ + o_hq, mask=m_r, other=0.0)  # [R]
        b_delta = tl.load(delta + o_i * HQ + o_hq, mask=m_r, other=0.0)
        b_st = tl.dot(b_k, b_qt, input_precision=DOT_PRECISION) * scale  # [BC, R]
        m_t = (o_i[None, :] >= b_first[:, None]) & (o_i[None, :] < b_end[:, None]) & m_r[None, :]
        b_pt = tl.where(m_t, tl.exp(b_st - b_lse[None, :]), 0.0)
        b_dv += tl.dot(b_pt.to(b_dot.dtype), tl.trans(b_dot), input_precision=DOT_PRECISION)
        b_dpt = tl.dot(b_v, b_dot, input_precision=DOT_PRECISION)  # [BC, R]
        b_dst = b_pt * (b_dpt - b_delta[None, :])
        b_dk += tl.dot(b_dst.to(b_qt.dtype), tl.trans(b_qt), input_precision=DOT_PRECISION)
    tl.store(dkc + o_ck, b_dk * scale, mask=m_ck)
    tl.store(dvc + o_cv, b_dv, mask=m_cv)


def _meta(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, block_size: int) -> dict:
    H, K, V = kc.shape[1], kc.shape[2], vc.shape[2]
    G = q.shape[1] // H
    return dict(H=H, G=G, K=K, V=V, BS=block_size, BC=BC, DOT_PRECISION=dot_precision(q.dtype)), group_blocks(G, K, V)


def nsa_cmp_fwd(q, kc, vc, tables: NSATables, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q ``[NQ, HQ, K]``, block means ``kc [NB, H, K]``, ``vc [NB, H, V]`` -> ``o [NQ, HQ, V]`` (q.dtype),
    ``lse [NQ, HQ]`` float32."""
    NQ, HQ = q.shape[:2]
    meta, blocks = _meta(q, kc, vc, tables.block_size)
    o = empty(NQ, HQ, vc.shape[-1], dtype=q.dtype, device=q.device)
    lse = empty(NQ, HQ, dtype=torch.float32, device=q.device)
    if NQ:
        nsa_cmp_fwd_kernel[(NQ, meta["H"])](
            q, kc, vc, o, lse, tables.tok_pos, tables.tok_boc, scale,
            **meta, BG=blocks["BG"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    return o, lse


def nsa_cmp_bwd(q, kc, vc, lse, delta, do, tables: NSATables, scale: float):
    """``(dq [NQ, HQ, K] q.dtype, dkc [NB, H, K] float32, dvc [NB, H, V] float32)``; ``delta = (o . do)``."""
    NQ = q.shape[0]
    meta, blocks = _meta(q, kc, vc, tables.block_size)
    dq = empty(*q.shape, dtype=q.dtype, device=q.device)
    dkc = empty(*kc.shape, dtype=torch.float32, device=q.device)
    dvc = empty(*vc.shape, dtype=torch.float32, device=q.device)
    if NQ:
        nsa_cmp_bwd_dq_kernel[(NQ, meta["H"])](
            q, kc, vc, lse, delta, do, dq, tables.tok_pos, tables.tok_boc, scale,
            **meta, BG=blocks["BG"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    NB = tables.num_blocks
    if NB:
        nsa_cmp_bwd_dkv_kernel[(triton.cdiv(NB, BC), meta["H"])](
            q, kc, vc, lse, delta, do, dkc, dvc, tables.blk_first_q, tables.blk_seq_end, scale, NB,
            **meta, BGD=blocks["BGD"], BQ=blocks["BQ"], BK=blocks["BK"], BV=blocks["BV"],
        )  # fmt: skip
    return dq, dkc, dvc


class NSACompressionFunction(torch.autograd.Function):
    """Triton compressed attention: ``(o, lse)`` from flat ``q``, ``kc``, ``vc`` (lse carries no gradient)."""

    @staticmethod
    def forward(ctx, q, kc, vc, tables, scale):
        q, kc, vc = q.contiguous(), kc.contiguous(), vc.contiguous()
        o, lse = nsa_cmp_fwd(q, kc, vc, tables, scale)
        ctx.save_for_backward(q, kc, vc, o, lse)
        ctx.tables, ctx.scale = tables, scale
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, kc, vc, o, lse = ctx.saved_tensors
        if not ctx.tables.same_layout:
            raise NotImplementedError("NSA backward needs queries and keys of the same lengths (no cached prefix)")
        do = do.contiguous()
        delta = parallel_attn_bwd_delta(o.contiguous(), do, None)  # [NQ, HQ] float32: rowsum(o * do)
        dq, dkc, dvc = nsa_cmp_bwd(q, kc, vc, lse, delta, do, ctx.tables, ctx.scale)
        return dq, dkc.to(kc.dtype), dvc.to(vc.dtype), None, None


def parallel_nsa_compression(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    TK: int,
    block_size: int = 64,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compressed branch alone (fla 0.6.0's): q ``[B, TQ, HQ, K]`` over the block means ``k [B, TC, H, K]``,
    ``v [B, TC, H, V]`` of ``TK`` keys (packed sequence by sequence with ``cu_seqlens``).

    Returns ``(o [B, TQ, HQ, V], lse [B, TQ, HQ] float32)`` (``lse = 0`` where no block is complete yet)."""
    check_branch_inputs(q, k, v, TK, block_size, cu_seqlens)
    B, TQ, HQ, _ = q.shape
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    tables = build_tables(B, TQ, TK, block_size, cu_seqlens, q.device)
    if k.shape[0] * k.shape[1] != tables.num_blocks:
        raise ValueError(f"k has {k.shape[0] * k.shape[1]} blocks in all, expected {tables.num_blocks} for TK={TK}")
    o, lse = NSACompressionFunction.apply(flat_tokens(q), flat_tokens(k), flat_tokens(v), tables, scale)
    return o.view(B, TQ, HQ, -1), lse.view(B, TQ, HQ)


__all__ = ["NSACompressionFunction", "group_blocks", "nsa_cmp_bwd", "nsa_cmp_fwd", "parallel_nsa_compression"]
