"""Triton backward of the chunked DPLR delta rule (maths in ``../README.md``), two kernels after the forward's
recomputation (the chunk stages, the states ``h`` before every chunk):

1. :func:`dplr_chunk_bwd_dh_kernel`, one program per (sequence, head, V block) walking its chunks backwards with
   the state gradient ``dh [K, BV]`` (of the state after the chunk) in registers, storing it for every chunk.
   With the chunk stages' maps ``u = W h + U0``, ``o = Qh h + O0`` and ``h' = EL h + Kd^T v + Bd^T u``
   (``EL = exp(G_L)``, ``Bd = b * exp(G_L - G)``: :class:`.chunk_intra.DPLRStages`)::

       dh  <- EL * dh + Qh^T do + W^T (Bd dh)

2. :func:`dplr_chunk_bwd_local_kernel`, one program per chunk (of every sequence and head), with its ``h`` and
   ``dh`` in ``[K, BV]`` blocks (the sums over the values accumulate) and the scores and ``Tm`` that the
   recomputed chunk stages stored (``[B, T, H, 5, 16]`` fp32)::

       du   = A_qb^T do + (b * exp(G_L - G)) dh          drhs = Tm^T du          (u = Tm rhs)
       dA_qk = do v^T,  dA_qb = do u^T  (j <= i)         dA_ak = drhs v^T,  dA_ab = drhs u^T  (j < i)
       dv   = A_qk^T do + A_ak^T drhs + (k * exp(G_L - G)) dh

   It stores ``dv`` and holds the state parts of ``dq, dk, da, db`` and ``dL/dG_L`` (the chunk-end decay's
   gradient) in ``[BT, K]`` registers, then, with the four ``dA``, adds the score parts
   (``sum_j dA_ij y_j exp(Gr_i - Gc_j)`` and transposed): when the chunk's decay span is at most
   :data:`.chunk_intra.SPAN_MAX` (RWKV7's always is) as ``tl.dot`` products of rows scaled from the chunk's start,
   over the whole key dim in registers; otherwise it stores the state parts in fp32 scratch and goes over the key
   channels in blocks of 16 (:func:`_score_grads_elementwise`: ``[BT, BT, 16]`` elementwise products, as the
   forward's scores). Then the gate gradient (:func:`_finish_key_grads`). Every appearance of ``G`` is
   ``q exp(G)``, ``k exp(-G)``, ``b exp(-G)``, ``a exp(Gx)`` or the chunk-end ``exp(G_L)``, so
   ``dL/dG = q dq - k dk - b db (+ dL/dG_L at the last row)``, ``dL/dGx = a da``, and ``dgk`` is the chunk-local
   reverse cumsum of ``dL/dG + dL/dGx`` minus ``dL/dGx`` (``Gx = G - gk``). (Until the score pass moved in here a
   third kernel, one program per chunk and 16 key channels, did it from an fp32 ``dA [B, T, H, 4, BT]`` in
   memory: 3.97 of 14.7 ms of RWKV7's fwd+bwd on an H200 at B=4, T=4096, H=16, D=128.)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds, sequence_bounds, state_block
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.ops.generalized_delta_rule.dplr.chunk_fwd import (
    chunk_dplr_fwd,
    chunk_state_dtype,
    fit_walk_block,
    walk_bf16_dots,
    walk_configs,
    walk_operand,
)
from fla.ops.generalized_delta_rule.dplr.chunk_intra import (
    DPLR_CHUNK,
    SPAN_MAX,
    chunk_decay_span,
    load_channel_block,
    load_scores,
)
from fla.utils import empty, empty_like
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

# K and V up to which the Triton backward runs (wider heads: the recomputed PyTorch form, backward.py). The chunk
# pass now holds the state in [K, BV] blocks, so V past it would fit as well; not raised without a GPU run.
DPLR_BWD_MAX_DIM = 128


@lean_launch
@given_heuristics(USE_DHT="dht", STORE_DH0="dh0", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=walk_configs(),
    key=["H", "K", "V", "BK", "DOT_PRECISION", "BF16_DOTS", "USE_DHT", "STORE_DH0", "IS_VARLEN"],
    prune_configs_by={"early_config_prune": fit_walk_block},
)
@triton.jit(do_not_specialize=["T"])
def dplr_chunk_bwd_dh_kernel(
    W,
    Qh,
    Bd,
    EL,
    do,
    dht,
    dhs,
    dh0,
    cu_seqlens,
    chunk_offsets,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BF16_DOTS: tl.constexpr,
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT_n, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim
    o_t = tl.arange(0, BT)

    b_dh = tl.zeros([BK, BV], dtype=tl.float32)  # gradient of the state after the current chunk
    if USE_DHT:
        b_dh += tl.load(dht + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for j_c in range(0, NT_n):
        i_c = NT_n - 1 - j_c
        tl.store(dhs + ((boh + i_c) * H + i_h) * K * V + o_kv, b_dh.to(dhs.dtype.element_ty), mask=m_kv)
        m_t = i_c * BT + o_t < T_n  # [BT]
        rows = (bos + i_c * BT + o_t) * H + i_h  # [BT]
        p_x = rows[:, None] * K + o_k[None, :]  # [BT, BK]
        m_x = m_t[:, None] & m_k[None, :]
        b_eL = tl.load(EL + ((boh + i_c) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
        b_Bd = walk_operand(tl.load(Bd + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_do = tl.load(do + rows[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0)
        # [BT, BV]: through h' only
        b_du = tl.dot(b_Bd, walk_operand(b_dh, BF16_DOTS), input_precision=DOT_PRECISION)
        b_dh *= b_eL[:, None]
        b_Qh = walk_operand(tl.load(Qh + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_dh += tl.dot(tl.trans(b_Qh), walk_operand(b_do, BF16_DOTS), input_precision=DOT_PRECISION)
        b_W = walk_operand(tl.load(W + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_dh += tl.dot(tl.trans(b_W), walk_operand(b_du, BF16_DOTS), input_precision=DOT_PRECISION)
    if STORE_DH0:
        tl.store(dh0 + i_nh * K * V + o_kv, b_dh, mask=m_kv)


@triton.jit
def _finish_key_grads(
    c_q, c_k, c_a, c_b, c_dq, c_dk, c_da, c_db, c_gl, m_t, p_c, m_c, dgk, dq_o, dk_o, da_o, db_o, scale,
    BT: tl.constexpr,
):  # fmt: skip
    """Key channels of a chunk with their whole ``dq`` (for the scaled ``c_q``), ``dk, da, db`` ``[BT, BC]``: the
    gate gradient (``dL/dG = q dq - k dk - b db``, plus ``c_gl``, the chunk-end decay's ``dL/dG_L [BC]``, at the
    last row; ``dL/dGx = a da``; ``dgk`` is the chunk-local reverse cumsum of their sum minus ``dL/dGx``), then every
    gradient stored in its output's dtype (``dq`` scaled) at ``p_c`` (mask ``m_c``)."""
    o_t = tl.arange(0, BT)
    c_dGx = c_a * c_da
    c_x = c_q * c_dq - c_k * c_dk - c_b * c_db + c_dGx
    last = tl.max(tl.where(m_t, o_t, 0), axis=0)  # the chunk's last row (G_L = G there)
    c_x += tl.where((o_t == last)[:, None], c_gl[None, :], 0.0)
    c_rev = tl.sum(c_x, axis=0)[None, :] - tl.cumsum(c_x, axis=0) + c_x  # sum over rows s >= i
    tl.store(dgk + p_c, (c_rev - c_dGx).to(dgk.dtype.element_ty), mask=m_c)
    tl.store(dq_o + p_c, (c_dq * scale).to(dq_o.dtype.element_ty), mask=m_c)
    tl.store(dk_o + p_c, c_dk.to(dk_o.dtype.element_ty), mask=m_c)
    tl.store(da_o + p_c, c_da.to(da_o.dtype.element_ty), mask=m_c)
    tl.store(db_o + p_c, c_db.to(db_o.dtype.element_ty), mask=m_c)


@triton.jit
def _score_grads_elementwise(
    q, k, a, b, gk, dq, dk, da, db, dgk, dq_o, dk_o, da_o, db_o, dgl, rows, m_t, i_kc, dA_qk, dA_qb, dA_ak, dA_ab,
    scale, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """Key channels ``i_kc * BC ..`` of a chunk whose decay span exceeds :data:`SPAN_MAX`: the score parts of
    ``dq, dk, da, db`` (``sum_j dA_ij y_j exp(Gr_i - Gc_j)`` and transposed, as ``[BT, BT, BC]`` elementwise products
    with each exponent masked to its causal part first: no factor exceeds 1) added to the state parts this program
    stored in the fp32 scratch ``dq, dk, da, db``, then :func:`_finish_key_grads`. ``dgl``: the chunk's
    ``dL/dG_L [K]``."""
    o_t = tl.arange(0, BT)
    m_incl = o_t[:, None] >= o_t[None, :]
    m_strict = o_t[:, None] > o_t[None, :]
    o_kc = i_kc * BC + tl.arange(0, BC)
    c_q, c_k, c_a, c_b, c_G, c_Gx, p_c, m_c = load_channel_block(q, k, a, b, gk, rows, m_t, o_kc, scale, K)
    c_dq = tl.load(dq + p_c, mask=m_c, other=0.0)
    c_da = tl.load(da + p_c, mask=m_c, other=0.0)
    c_dk = tl.load(dk + p_c, mask=m_c, other=0.0)
    c_db = tl.load(db + p_c, mask=m_c, other=0.0)
    # rows i read columns j: dq_i = sum_j (dA_qk k_j + dA_qb b_j) e^{G_i - G_j}, da_i likewise with e^{Gx_i - G_j};
    # columns j collect dk_j, db_j from the rows
    E_in = tl.exp(tl.where(m_incl[:, :, None], c_G[:, None, :] - c_G[None, :, :], float("-inf")))
    E_ex = tl.exp(tl.where(m_strict[:, :, None], c_Gx[:, None, :] - c_G[None, :, :], float("-inf")))
    c_dq += tl.sum((dA_qk[:, :, None] * c_k[None, :, :] + dA_qb[:, :, None] * c_b[None, :, :]) * E_in, axis=1)
    c_da += tl.sum((dA_ak[:, :, None] * c_k[None, :, :] + dA_ab[:, :, None] * c_b[None, :, :]) * E_ex, axis=1)
    c_dk += tl.sum(dA_qk[:, :, None] * c_q[:, None, :] * E_in + dA_ak[:, :, None] * c_a[:, None, :] * E_ex, axis=0)
    c_db += tl.sum(dA_qb[:, :, None] * c_q[:, None, :] * E_in + dA_ab[:, :, None] * c_a[:, None, :] * E_ex, axis=0)
    c_gl = tl.load(dgl + o_kc, mask=o_kc < K, other=0.0)  # [BC]
    _finish_key_grads(c_q, c_k, c_a, c_b, c_dq, c_dk, c_da, c_db, c_gl, m_t, p_c, m_c, dgk, dq_o, dk_o, da_o, db_o,
                      scale, BT)  # fmt: skip


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
# Its key-wide accumulators are [BT, BK] whatever BV: 8 warps hold them with less spilling (sm_90 SASS at
# K = V = 128: 4 warps 576 B of stack, 8 warps under 140 B), 4 leave the SM room for more programs. The program
# rewrites every output it reads back, so the autotuner's repeated launches are harmless.
@triton.autotune(
    configs=walk_configs(warps=(4, 8)),
    key=["H", "K", "V", "BK", "DOT_PRECISION", "IS_VARLEN"],
    prune_configs_by={"early_config_prune": fit_walk_block},
)
@triton.jit(do_not_specialize=["T"])
def dplr_chunk_bwd_local_kernel(
    q,
    k,
    v,
    a,
    b,
    gk,
    hs,
    dhs,
    do,
    dv,
    dq,
    dk,
    da,
    db,
    dgl,
    dgk,
    dq_o,
    dk_o,
    da_o,
    db_o,
    S,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BKC: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_c, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_t = tl.arange(0, BT)
    m_incl = o_t[:, None] >= o_t[None, :]  # [BT, BT] j <= i
    m_strict = o_t[:, None] > o_t[None, :]  # [BT, BT] j < i
    m_t = i_c * BT + o_t < T_n  # [BT]
    rows = (bos + i_c * BT + o_t) * H + i_h  # [BT]
    # the forward's scores and Tm, as the backward's recomputation of the chunk stages stored them
    A_qk, A_qb, A_ak, A_ab, b_T = load_scores(S, rows, m_t, BT)
    p_x = rows[:, None] * K + o_k[None, :]  # [BT, BK]
    m_x = m_t[:, None] & m_k[None, :]
    b_k = tl.load(k + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_a = tl.load(a + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_b = tl.load(b + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_g = tl.load(gk + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_G = tl.cumsum(b_g, axis=0)
    b_Gx = b_G - b_g
    b_GL = tl.sum(b_g, axis=0)  # [BK] (rows past the end add 0)
    b_w = b_a * tl.exp(b_Gx)  # [BT, BK]
    b_dec = tl.exp(b_GL[None, :] - b_G)  # [BT, BK]
    b_kd, b_bd = b_k * b_dec, b_b * b_dec
    # value blocks of BV: what sums over the values (the four dA, the state parts of dq, da, dk, db, dG_L)
    # accumulates, the rest (u, du, drhs, dv) is per block
    dA_qk = tl.zeros([BT, BT], dtype=tl.float32)
    dA_qb = tl.zeros([BT, BT], dtype=tl.float32)
    dA_ak = tl.zeros([BT, BT], dtype=tl.float32)
    dA_ab = tl.zeros([BT, BT], dtype=tl.float32)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_da = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_db = tl.zeros([BT, BK], dtype=tl.float32)
    b_hdh = tl.zeros([BK], dtype=tl.float32)  # sum over the values of h * dh
    for i_v in range(0, tl.cdiv(V, BV)):
        _, o_v, _, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)
        p_y = rows[:, None] * V + o_v[None, :]  # [BT, BV]
        m_y = m_t[:, None] & m_v[None, :]
        b_v = tl.load(v + p_y, mask=m_y, other=0.0).to(tl.float32)
        b_do = tl.load(do + p_y, mask=m_y, other=0.0).to(tl.float32)
        p_h = (i_ch * H + i_h) * K * V + o_kv
        b_h = tl.load(hs + p_h, mask=m_kv, other=0.0).to(tl.float32)  # the state before the chunk
        b_dh = tl.load(dhs + p_h, mask=m_kv, other=0.0).to(tl.float32)  # the gradient of the state after it
        b_rhs = tl.dot(b_w, b_h, input_precision=DOT_PRECISION) + tl.dot(A_ak, b_v, input_precision=DOT_PRECISION)
        b_u = tl.dot(b_T, b_rhs, input_precision=DOT_PRECISION)  # [BT, BV]
        # gradients of u, rhs, the scores and v
        b_du = tl.dot(tl.trans(A_qb), b_do, input_precision=DOT_PRECISION)
        b_du += tl.dot(b_bd, b_dh, input_precision=DOT_PRECISION)
        b_drhs = tl.dot(tl.trans(b_T), b_du, input_precision=DOT_PRECISION)  # [BT, BV]
        dA_qk += tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION)
        dA_qb += tl.dot(b_do, tl.trans(b_u), input_precision=DOT_PRECISION)
        dA_ak += tl.dot(b_drhs, tl.trans(b_v), input_precision=DOT_PRECISION)
        dA_ab += tl.dot(b_drhs, tl.trans(b_u), input_precision=DOT_PRECISION)
        b_dv = tl.dot(tl.trans(A_qk), b_do, input_precision=DOT_PRECISION)
        b_dv += tl.dot(tl.trans(A_ak), b_drhs, input_precision=DOT_PRECISION)
        b_dv += tl.dot(b_kd, b_dh, input_precision=DOT_PRECISION)
        tl.store(dv + p_y, b_dv.to(dv.dtype.element_ty), mask=m_y)
        b_dq += tl.dot(b_do, tl.trans(b_h), input_precision=DOT_PRECISION)  # [BT, BK]
        b_da += tl.dot(b_drhs, tl.trans(b_h), input_precision=DOT_PRECISION)
        b_dk += tl.dot(b_v, tl.trans(b_dh), input_precision=DOT_PRECISION)
        b_db += tl.dot(b_u, tl.trans(b_dh), input_precision=DOT_PRECISION)
        b_hdh += tl.sum(b_h * b_dh, axis=1)
    # the state parts of dq (for the scaled q), da, dk, db and the chunk-end decay's gradient; the score parts add
    # to them below
    b_eG, b_eGx = tl.exp(b_G), tl.exp(b_Gx)
    b_dq *= b_eG
    b_da *= b_eGx
    b_dk *= b_dec
    b_db *= b_dec
    b_dGL = tl.exp(b_GL) * b_hdh + tl.sum(b_k * b_dk + b_b * b_db, axis=0)  # [BK]
    dA_qk = tl.where(m_incl, dA_qk, 0.0)
    dA_qb = tl.where(m_incl, dA_qb, 0.0)
    dA_ak = tl.where(m_strict, dA_ak, 0.0)
    dA_ab = tl.where(m_strict, dA_ab, 0.0)
    if chunk_decay_span(gk, rows, m_t, K, BKC) <= SPAN_MAX:
        # every factor e^{+-G} within [e^-60, e^60] (chunk_scores): the score parts as tl.dot products of rows
        # scaled from the chunk's start, over the whole key dim, the accumulators staying in registers
        b_q = tl.load(q + p_x, mask=m_x, other=0.0).to(tl.float32) * scale
        b_inv = tl.exp(-b_G)
        b_kn, b_bn = b_k * b_inv, b_b * b_inv
        b_qg = b_q * b_eG  # b_w = a e^{Gx} is the a-side factor
        b_dq += b_eG * (tl.dot(dA_qk, b_kn, input_precision=DOT_PRECISION)
                        + tl.dot(dA_qb, b_bn, input_precision=DOT_PRECISION))  # fmt: skip
        b_da += b_eGx * (tl.dot(dA_ak, b_kn, input_precision=DOT_PRECISION)
                         + tl.dot(dA_ab, b_bn, input_precision=DOT_PRECISION))  # fmt: skip
        b_dk += b_inv * (tl.dot(tl.trans(dA_qk), b_qg, input_precision=DOT_PRECISION)
                         + tl.dot(tl.trans(dA_ak), b_w, input_precision=DOT_PRECISION))  # fmt: skip
        b_db += b_inv * (tl.dot(tl.trans(dA_qb), b_qg, input_precision=DOT_PRECISION)
                         + tl.dot(tl.trans(dA_ab), b_w, input_precision=DOT_PRECISION))  # fmt: skip
        _finish_key_grads(b_q, b_k, b_a, b_b, b_dq, b_dk, b_da, b_db, b_dGL, m_t, p_x, m_x, dgk, dq_o, dk_o, da_o,
                          db_o, scale, BT)  # fmt: skip
    else:
        # stronger decays: the elementwise form over key blocks of BKC, which reads the state parts back from the
        # fp32 scratch
        tl.store(dq + p_x, b_dq, mask=m_x)
        tl.store(da + p_x, b_da, mask=m_x)
        tl.store(dk + p_x, b_dk, mask=m_x)
        tl.store(db + p_x, b_db, mask=m_x)
        p_gl = dgl + (i_ch * H + i_h) * K
        tl.store(p_gl + o_k, b_dGL, mask=m_k)
        tl.debug_barrier()  # the blocks below read back what this program's threads stored
        for i_kc in range(0, tl.cdiv(K, BKC)):
            _score_grads_elementwise(q, k, a, b, gk, dq, dk, da, db, dgk, dq_o, dk_o, da_o, db_o, p_gl, rows, m_t,
                                     i_kc, dA_qk, dA_qb, dA_ak, dA_ab, scale, K, BT, BKC)  # fmt: skip


class DPLRForwardState(NamedTuple):
    """What the backward reads of the forward: the chunk layout, the state before every chunk ``hs``
    (``layout.states_shape``), the chunk stages' ``W``, ``Qh``, ``Bd`` ``[B, T, H, K]`` (:func:`.chunk_stage_dtype`)
    and ``EL`` ``[B, NT, H, K]`` float32 (:class:`.chunk_intra.DPLRStages`), and their scores and ``Tm``
    ``S [B, T, H, 5, 16]`` float32."""

    layout: ChunkLayout
    hs: torch.Tensor
    W: torch.Tensor
    Qh: torch.Tensor
    Bd: torch.Tensor
    EL: torch.Tensor
    S: torch.Tensor


def dplr_forward_for_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    want_o: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, DPLRForwardState]:
    """:func:`.chunk_fwd.chunk_dplr_fwd` keeping what the backward reads: ``(o or None, ht or None, state)``.
    Per token and head that is ``K * V / 16`` state elements (bf16 for bf16 inputs, else float32), ``3 K`` of
    ``W, Qh, Bd`` (:func:`.chunk_stage_dtype`), ``K / 16`` float32 of ``EL`` and 80 float32 scores: ~3.1 KB at
    K = V = 128 with bf16 inputs (2 KB of states), against the 1.5 KB of its six bf16 inputs."""
    B, T, H, _ = q.shape
    layout = ChunkLayout.build(q, cu_seqlens, DPLR_CHUNK)
    S = empty(B, T, H, 5, DPLR_CHUNK, dtype=torch.float32, device=q.device)  # the scores and Tm (load_scores)
    o, ht, hs, stages = chunk_dplr_fwd(
        q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens, layout=layout, want_o=want_o, scores=S
    )
    return o, ht, DPLRForwardState(layout, hs, stages.W, stages.Qh, stages.Bd, stages.EL, S)


def chunk_dplr_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    want_dh0: bool,
    kept: DPLRForwardState | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of the chunked DPLR delta rule (``K, V <= 128``): ``dq, dk, da, db, dgk`` ``[B, T, H, K]`` and
    ``dv [B, T, H, V]``, each in its input's dtype, and ``dh0 [N, H, K, V]`` float32 or ``None``.

    The kernel sums the state and score parts of ``dq, dk, da, db`` in float32 registers (chunks of decay span
    past :data:`.chunk_intra.SPAN_MAX`: in float32 scratch, the same tensors as the outputs for float32 inputs) and
    stores the finished gradients in the inputs' dtypes.

    ``kept``: what the forward kept (:func:`dplr_forward_for_backward`); without it the forward's chunk stages and
    state walk run again here."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BT = DPLR_CHUNK
    if kept is None:
        _, _, kept = dplr_forward_for_backward(q, k, v, a, b, gk, scale, initial_state, False, cu_seqlens, False)
    layout, hs, W, Qh, Bd, EL, S = kept
    dhs = empty(*layout.states_shape(H, K, V), dtype=chunk_state_dtype(q.dtype), device=q.device)
    dq, dk, da, db = (empty(B, T, H, K, dtype=torch.float32, device=q.device) for _ in range(4))  # scratch
    outs = [g if x.dtype == torch.float32 else empty_like(x) for g, x in zip((dq, dk, da, db), (q, k, a, b))]
    dgl = empty(*layout.states_shape(H, K, 1)[:-1], dtype=torch.float32, device=q.device)  # dL/dG_L per chunk
    dv = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    dgk = empty_like(gk)
    dh0 = empty(N, H, K, V, dtype=torch.float32, device=q.device) if want_dh0 else None
    BK = max(16, next_power_of_2(K))
    precision = dot_precision(q.dtype)
    dplr_chunk_bwd_dh_kernel[lambda meta: (cdiv(V, meta["BV"]), N * H)](  # V blocks as the forward walk's
        W, Qh, Bd, EL, do, dht, dhs, dh0, cu_seqlens, layout.chunk_offsets, T, H=H, K=K, V=V, BT=BT, BK=BK,
        DOT_PRECISION=precision, BF16_DOTS=walk_bf16_dots(q.dtype),
    )  # fmt: skip
    dplr_chunk_bwd_local_kernel[(layout.row_chunks, B * H)](
        q, k, v, a, b, gk, hs, dhs, do, dv, dq, dk, da, db, dgl, dgk, *outs, S, cu_seqlens, layout.chunk_indices, scale,
        T, H=H, K=K, V=V, BT=BT, BK=BK, BKC=16, DOT_PRECISION=precision,
    )  # fmt: skip
    dq, dk, da, db = outs
    return dq, dk, dv, da, db, dgk, dh0


__all__ = ["DPLR_BWD_MAX_DIM", "DPLRForwardState", "chunk_dplr_bwd", "dplr_forward_for_backward"]
