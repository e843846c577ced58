"""Intra-chunk scores for vector gates, with secondary sub-chunking for stable ``exp(G_i - G_j)``.

``A_ij = scale * sum_k q_ik k_jk exp(G_ik - G_jk)`` for ``i >= j`` inside a chunk (``G`` =
chunk-local cumsum of ``gk``, non-increasing along the chunk). Factoring the exponent as
``exp(G_i - G_r) * exp(G_r - G_j)`` turns a block into a matmul but is only safe when both factors
are <= 1, i.e. ``j <= r <= i``. So the chunk is cut into sub-chunks of ``BC`` rows:

* a block below the diagonal (sub-chunk ``I`` > ``J``) uses the first row of ``I`` as ``r``
  (the last row of ``J`` for the transposed products of the backward);
* a diagonal block is summed column by column with the exact ``exp(G_i - G_j)`` (fp32).

Backward: ``dA = scale * (do v^T)`` (causal), ``dq_i = sum_j dA_ij k_j exp(G_i - G_j)`` and
``dk_j = sum_i dA_ij q_i exp(G_i - G_j)`` with the same blocking. ``dA``, the intra ``dq`` and ``dk``
are float32; ``A`` is stored in the dtype its consumers multiply it in (the values' dtype: the output and
dv stages cast it to that dtype for their ``tl.dot`` anyway, so a float32 ``A`` would only cost memory,
kept for the backward, and bandwidth). ``A`` / ``dA`` rows are ``[B, T, H, BT]`` (column = row inside
the chunk).

``STRICT`` (RWKV6): the queries carry their own gate ``gq`` (the exclusive cumsum ``G_i - g_i``) and the
scores are strictly causal, ``A_ij = scale * sum_k q_ik k_jk exp(Gq_ik - G_jk)`` for ``i > j`` (the diagonal
is the bonus term, formed elsewhere). Every exponent stays <= 0 for ``j < i``: ``Gq_i - G_j = G_{i-1} - G_j``.
The reference row of a block is the first query row's ``Gq`` (forward, ``dq``) or the last key row's ``G``
(``dk``), so the factored products keep both factors <= 1 below the diagonal; the diagonal blocks' span check
covers both gates.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import SUB_CHUNK_SIZE, autotune_configs, block_size, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv

# Largest |G_i - G_r| inside a sub-chunk for which its diagonal block is factored into a matmul
# (factors up to exp(30) ~ 1e13 stay far from the fp32 range); steeper gates take the exact loop.
DIAGONAL_MAX_SPAN = tl.constexpr(30.0)


@triton.jit
def _gate_span(b_g, b_gr, m):
    """max |G_i - G_r| over the valid entries of a ``[BC, BK]`` tile of cumulated gates (a scalar)."""
    return tl.max(tl.max(tl.where(m, tl.abs(b_g - b_gr[None, :]), 0.0), axis=1), axis=0)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(1, 2, 4)), key=["H", "K", "BK", "BC", "DOT_PRECISION", "STRICT"])
@triton.jit(do_not_specialize=["T"])
def chunk_gk_scores_fwd_kernel(
    q,
    k,
    gk,
    gq,
    A,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRICT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per (sub-chunk pair I, J) of a chunk: block A[I, J] ([BC, BC]); gq: the queries' gate
    # (gk itself unless STRICT)
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_ij, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    NC: tl.constexpr = BT // BC
    i_i, i_j = i_ij // NC, i_ij % NC
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_c = tl.arange(0, BC)  # [BC]
    o_ti = i_tc * BT + i_i * BC + o_c  # [BC] rows i
    o_tj = i_tc * BT + i_j * BC + o_c  # [BC] rows j
    m_ti, m_tj = o_ti < T_n, o_tj < T_n
    b_A = tl.zeros([BC, BC], dtype=tl.float32)
    if i_i > i_j:
        i_r = tl.minimum(i_tc * BT + i_i * BC, T_n - 1)  # reference row: first row of I
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            m_k = o_k < K
            o_ik = ((bos + o_ti[:, None]) * H + i_h) * K + o_k[None, :]  # [BC, BK]
            m_ik = m_ti[:, None] & m_k[None, :]
            o_kj = ((bos + o_tj[None, :]) * H + i_h) * K + o_k[:, None]  # [BK, BC]: rows j transposed
            m_kj = m_k[:, None] & m_tj[None, :]
            b_gr = tl.load(gq + ((bos + i_r) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
            b_q = tl.load(q + o_ik, mask=m_ik, other=0.0)
            b_gq = tl.load(gq + o_ik, mask=m_ik, other=0.0)
            b_kt = tl.load(k + o_kj, mask=m_kj, other=0.0)
            b_gkt = tl.load(gk + o_kj, mask=m_kj, other=0.0)
            b_qg = b_q * tl.exp(tl.where(m_ik, b_gq - b_gr[None, :], 0.0))
            b_kg = b_kt * tl.exp(tl.where(m_kj, b_gr[:, None] - b_gkt, 0.0))
            b_A += tl.dot(b_qg.to(b_q.dtype), b_kg.to(b_kt.dtype), input_precision=DOT_PRECISION)
    elif i_i == i_j:
        i_r = tl.minimum(i_tc * BT + i_i * BC, T_n - 1)  # first row of the sub-chunk
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            o_ik = ((bos + o_ti[:, None]) * H + i_h) * K + o_k[None, :]  # [BC, BK]
            m_ik = m_ti[:, None] & m_k[None, :]
            b_q = tl.load(q + o_ik, mask=m_ik, other=0.0).to(tl.float32)
            b_gq = tl.load(gq + o_ik, mask=m_ik, other=0.0)
            b_gr = tl.load(gq + ((bos + i_r) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
            b_span = _gate_span(b_gq, b_gr, m_ik)
            if STRICT:  # the keys' gate reaches one row further than the queries'
                b_span = tl.maximum(b_span, _gate_span(tl.load(gk + o_ik, mask=m_ik, other=0.0), b_gr, m_ik))
            if b_span <= DIAGONAL_MAX_SPAN:
                # exp(G_i - G_j) = exp(G_i - G_r) exp(G_r - G_j): the second factor is >= 1 but
                # bounded by exp(MAX_SPAN); the products above the diagonal are masked at the store
                o_kj = ((bos + o_tj[None, :]) * H + i_h) * K + o_k[:, None]  # [BK, BC]
                m_kj = m_k[:, None] & m_tj[None, :]
                b_kt = tl.load(k + o_kj, mask=m_kj, other=0.0).to(tl.float32)
                b_gkt = tl.load(gk + o_kj, mask=m_kj, other=0.0)
                b_qg = b_q * tl.exp(tl.where(m_ik, b_gq - b_gr[None, :], 0.0))
                b_kg = b_kt * tl.exp(tl.where(m_kj, b_gr[:, None] - b_gkt, 0.0))
                b_A += tl.dot(b_qg, b_kg, input_precision=DOT_PRECISION)
            else:  # steep gates: sum column by column with the exact exp(G_i - G_j) <= 1
                for j in range(0, BC):
                    t_j = i_tc * BT + i_j * BC + j
                    m_j = m_k & (t_j + 0 * o_k < T_n)  # a vector compare: the interpreter rejects scalar masks
                    o_j = ((bos + t_j) * H + i_h) * K + o_k  # [BK]
                    b_kj = tl.load(k + o_j, mask=m_j, other=0.0).to(tl.float32)
                    b_gj = tl.load(gk + o_j, mask=m_j, other=0.0)
                    if STRICT:
                        m_e = m_ik & (o_c > j)[:, None] & m_j[None, :]
                    else:
                        m_e = m_ik & (o_c >= j)[:, None] & m_j[None, :]
                    b_e = tl.exp(tl.where(m_e, b_gq - b_gj[None, :], float("-inf")))  # [BC, BK]
                    b_a = tl.sum(b_q * b_kj[None, :] * b_e, axis=1)  # [BC]: column j
                    b_A += tl.where((o_c == j)[None, :], b_a[:, None], 0.0)
        if STRICT:
            b_A = tl.where(o_c[:, None] > o_c[None, :], b_A, 0.0)
        else:
            b_A = tl.where(o_c[:, None] >= o_c[None, :], b_A, 0.0)
    p_A = A + ((bos + o_ti[:, None]) * H + i_h) * BT + i_j * BC + o_c[None, :]
    tl.store(p_A, b_A * scale, mask=m_ti[:, None])


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["H", "V", "BV", "DOT_PRECISION", "STRICT"])
@triton.jit(do_not_specialize=["T"])
def chunk_gk_dA_bwd_kernel(
    v,
    do,
    dA,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRICT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_i = tl.arange(0, BT)
    o_t = i_tc * BT + o_i
    m_t = o_t < T_n
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        b_do = tl.load(
            do + ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
        )
        o_vt = ((bos + o_t[None, :]) * H + i_h) * V + o_v[:, None]  # [BV, BT]: v transposed
        b_vt = tl.load(v + o_vt, mask=m_v[:, None] & m_t[None, :], other=0.0)
        b_dA += tl.dot(b_do, b_vt, input_precision=DOT_PRECISION)
    if STRICT:
        b_dA = tl.where(o_i[:, None] > o_i[None, :], b_dA * scale, 0.0)
    else:
        b_dA = tl.where(o_i[:, None] >= o_i[None, :], b_dA * scale, 0.0)
    tl.store(dA + ((bos + o_t[:, None]) * H + i_h) * BT + o_i[None, :], b_dA, mask=m_t[:, None])


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(1, 2, 4)), key=["H", "K", "BK", "BC", "DOT_PRECISION", "STRICT"])
@triton.jit(do_not_specialize=["T"])
def chunk_gk_intra_bwd_kernel(
    q,
    k,
    gk,
    gq,
    dA,
    dq,
    dk,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STRICT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per (K block, sub-chunk I of a chunk): dq of rows I, dk of rows I (as columns);
    # gq: the queries' gate (gk itself unless STRICT)
    i_k, i_tI, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    NC: tl.constexpr = BT // BC
    i_t, i_i = i_tI // NC, i_tI % NC
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_c = tl.arange(0, BC)  # [BC]
    o_ti = i_tc * BT + i_i * BC + o_c  # [BC] rows of sub-chunk I
    m_ti = o_ti < T_n
    o_k = i_k * BK + tl.arange(0, BK)  # [BK]
    m_k = o_k < K
    o_ik = ((bos + o_ti[:, None]) * H + i_h) * K + o_k[None, :]  # [BC, BK]
    m_ik = m_ti[:, None] & m_k[None, :]
    b_g = tl.load(gk + o_ik, mask=m_ik, other=0.0)  # [BC, BK] keys' gate of rows I
    if STRICT:
        b_gq = tl.load(gq + o_ik, mask=m_ik, other=0.0)  # [BC, BK] queries' gate of rows I
    else:
        b_gq = b_g

    # dq_i, j in earlier sub-chunks: exp(Gq_i - Gq_r) * (dA_IJ (k_J * exp(Gq_r - G_J))), r = first row of I
    i_r = tl.minimum(i_tc * BT + i_i * BC, T_n - 1)
    b_gr = tl.load(gq + ((bos + i_r) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
    # the diagonal block factors the same way (with factors up to exp(span)) unless the gates are steep
    b_span = _gate_span(b_gq, b_gr, m_ik)
    if STRICT:
        b_span = tl.maximum(b_span, _gate_span(b_g, b_gr, m_ik))
    factored_diagonal = b_span <= DIAGONAL_MAX_SPAN
    b_dq = tl.zeros([BC, BK], dtype=tl.float32)
    for i_j in range(0, i_i):
        o_tj = i_tc * BT + i_j * BC + o_c
        o_jk = ((bos + o_tj[:, None]) * H + i_h) * K + o_k[None, :]  # [BC, BK]
        m_jk = (o_tj < T_n)[:, None] & m_k[None, :]
        b_kj = tl.load(k + o_jk, mask=m_jk, other=0.0)
        b_gj = tl.load(gk + o_jk, mask=m_jk, other=0.0)
        b_kg = b_kj * tl.exp(tl.where(m_jk, b_gr[None, :] - b_gj, 0.0))
        p_dA = dA + ((bos + o_ti[:, None]) * H + i_h) * BT + i_j * BC + o_c[None, :]
        b_dA = tl.load(p_dA, mask=m_ti[:, None], other=0.0)  # [BC, BC]
        b_dq += tl.dot(b_dA.to(b_kj.dtype), b_kg.to(b_kj.dtype), input_precision=DOT_PRECISION)
    if factored_diagonal:  # dA is causal (zero above the diagonal): k_i exp(G_r - G_i) >= 1 is safe
        b_ki = tl.load(k + o_ik, mask=m_ik, other=0.0).to(tl.float32)
        b_dAii = tl.load(dA + ((bos + o_ti[:, None]) * H + i_h) * BT + i_i * BC + o_c[None, :], mask=m_ti[:, None])
        b_kg = b_ki * tl.exp(tl.where(m_ik, b_gr[None, :] - b_g, 0.0))
        b_dq += tl.dot(tl.where(m_ti[:, None], b_dAii, 0.0), b_kg, input_precision=DOT_PRECISION)
    b_dq *= tl.exp(tl.where(m_ik, b_gq - b_gr[None, :], 0.0))
    # dk_j, i in later sub-chunks: exp(G_r - G_j) * (dA_LI^T (q_L * exp(Gq_L - G_r))), r = last row of I
    i_r = tl.minimum(i_tc * BT + i_i * BC + BC - 1, T_n - 1)
    b_gr = tl.load(gk + ((bos + i_r) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
    b_dk = tl.zeros([BC, BK], dtype=tl.float32)
    for i_l in range(i_i + 1, NC):
        o_tl = i_tc * BT + i_l * BC + o_c
        m_tl = o_tl < T_n
        o_lk = ((bos + o_tl[:, None]) * H + i_h) * K + o_k[None, :]  # [BC, BK]
        m_lk = m_tl[:, None] & m_k[None, :]
        b_ql = tl.load(q + o_lk, mask=m_lk, other=0.0)
        b_gl = tl.load(gq + o_lk, mask=m_lk, other=0.0)
        b_qg = b_ql * tl.exp(tl.where(m_lk, b_gl - b_gr[None, :], 0.0))
        p_dAt = dA + ((bos + o_tl[None, :]) * H + i_h) * BT + i_i * BC + o_c[:, None]  # [BC(j), BC(l)]
        b_dAt = tl.load(p_dAt, mask=m_tl[None, :], other=0.0)
        b_dk += tl.dot(b_dAt.to(b_ql.dtype), b_qg.to(b_ql.dtype), input_precision=DOT_PRECISION)
    if factored_diagonal:
        b_qi = tl.load(q + o_ik, mask=m_ik, other=0.0).to(tl.float32)
        p_dAt = dA + ((bos + o_ti[None, :]) * H + i_h) * BT + i_i * BC + o_c[:, None]  # [BC(j), BC(i)]
        b_dAt = tl.load(p_dAt, mask=m_ti[None, :], other=0.0)
        b_qg = b_qi * tl.exp(tl.where(m_ik, b_gq - b_gr[None, :], 0.0))
        b_dk += tl.dot(b_dAt, b_qg, input_precision=DOT_PRECISION)
    b_dk *= tl.exp(tl.where(m_ik, b_gr[None, :] - b_g, 0.0))
    if not factored_diagonal:
        # the diagonal block, exact: row r of sub-chunk I is a column of dq's sum and a row of dk's
        for r in range(0, BC):
            t_r = i_tc * BT + i_i * BC + r
            m_r = m_k & (t_r + 0 * o_k < T_n)  # [BK] (a vector compare: the interpreter rejects scalar masks)
            o_r = ((bos + t_r) * H + i_h) * K + o_k  # [BK]
            b_qr = tl.load(q + o_r, mask=m_r, other=0.0).to(tl.float32)
            b_kr = tl.load(k + o_r, mask=m_r, other=0.0).to(tl.float32)
            b_gkr = tl.load(gk + o_r, mask=m_r, other=0.0)  # [BK] keys' gate of row r
            if STRICT:
                b_gqr = tl.load(gq + o_r, mask=m_r, other=0.0)  # [BK] queries' gate of row r
            else:
                b_gqr = b_gkr
            p_dA_col = dA + ((bos + o_ti) * H + i_h) * BT + i_i * BC + r
            b_dA_col = tl.load(p_dA_col, mask=m_ti, other=0.0)  # [BC]: dA[i, r]
            p_dA_row = dA + ((bos + t_r) * H + i_h) * BT + i_i * BC + o_c  # [BC]: dA[r, j]
            b_dA_row = tl.load(p_dA_row, mask=t_r + 0 * o_c < T_n, other=0.0)
            if STRICT:
                m_below = m_ik & (o_c > r)[:, None] & m_r[None, :]  # rows i > r
                m_above = m_ik & (o_c < r)[:, None] & m_r[None, :]  # rows j < r
            else:
                m_below = m_ik & (o_c >= r)[:, None] & m_r[None, :]  # rows i >= r
                m_above = m_ik & (o_c <= r)[:, None] & m_r[None, :]  # rows j <= r
            b_eq = tl.exp(tl.where(m_below, b_gq - b_gkr[None, :], float("-inf")))
            b_ek = tl.exp(tl.where(m_above, b_gqr[None, :] - b_g, float("-inf")))
            b_dq += b_dA_col[:, None] * b_kr[None, :] * b_eq
            b_dk += b_dA_row[:, None] * b_qr[None, :] * b_ek

    tl.store(dq + o_ik, b_dq, mask=m_ik)
    tl.store(dk + o_ik, b_dk, mask=m_ik)


def chunk_gk_fwd_A(
    q: torch.Tensor,
    k: torch.Tensor,
    gk: torch.Tensor,
    layout: ChunkLayout,
    scale: float,
    dtype: torch.dtype,
    gq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled causal intra-chunk scores ``A [B, T, H, BT]`` (zeros above the diagonal), formed in float32 and
    stored in ``dtype``.

    Args:
        q, k: ``[B, T, H, K]``; gk: ``[B, T, H, K]`` chunk-local cumsum of the vector log gates.
        gq: ``[B, T, H, K]`` the queries' own gate (RWKV6: the exclusive cumsum ``gk - g``); given, the
            scores are strictly causal (zero diagonal too).
        dtype: the values' dtype (what :func:`.chunk_o.chunk_fwd_o` and :func:`.chunk_bwd.chunk_bwd_dv`
            round ``A`` to before their products: storing it so changes no result).
    """
    B, T, H, K = q.shape
    BT, BC, BK = layout.chunk_size, SUB_CHUNK_SIZE, block_size(K)
    NC = BT // BC
    A = empty(B, T, H, BT, dtype=dtype, device=q.device)
    grid = (NC * NC, layout.row_chunks, B * H)
    chunk_gk_scores_fwd_kernel[grid](
        q, k, gk, gk if gq is None else gq, A, layout.cu_seqlens, layout.chunk_indices, scale, T,
        H=H, K=K, BT=BT, BC=BC, BK=BK, DOT_PRECISION=dot_precision(q.dtype), STRICT=gq is not None,
    )  # fmt: skip
    return A


def chunk_gk_bwd_dA(
    v: torch.Tensor, do: torch.Tensor, layout: ChunkLayout, scale: float, strict: bool = False
) -> torch.Tensor:
    """``dA = scale * causal(do v^T)`` per chunk, ``[B, T, H, BT]`` float32 (``strict``: zero diagonal too)."""
    B, T, H, V = v.shape
    dA = empty(B, T, H, layout.chunk_size, dtype=torch.float32, device=v.device)
    grid = (layout.row_chunks, B * H)
    chunk_gk_dA_bwd_kernel[grid](
        v, do, dA, layout.cu_seqlens, layout.chunk_indices, scale, T,
        H=H, V=V, BT=layout.chunk_size, BV=block_size(V), DOT_PRECISION=dot_precision(v.dtype), STRICT=strict,
    )  # fmt: skip
    return dA


def chunk_gk_bwd_intra(
    q: torch.Tensor,
    k: torch.Tensor,
    gk: torch.Tensor,
    dA: torch.Tensor,
    layout: ChunkLayout,
    gq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intra-chunk ``dq``, ``dk`` ``[B, T, H, K]`` float32 from ``dA`` (:func:`chunk_gk_bwd_dA`); with the
    queries' gate ``gq`` the strictly causal form (as :func:`chunk_gk_fwd_A`; ``dA`` from ``strict=True``)."""
    B, T, H, K = q.shape
    BT, BC, BK = layout.chunk_size, SUB_CHUNK_SIZE, block_size(K)
    NC = BT // BC
    dq = empty(B, T, H, K, dtype=torch.float32, device=q.device)
    dk = empty(B, T, H, K, dtype=torch.float32, device=q.device)
    grid = (cdiv(K, BK), layout.row_chunks * NC, B * H)
    chunk_gk_intra_bwd_kernel[grid](
        q, k, gk, gk if gq is None else gq, dA, dq, dk, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, BT=BT, BC=BC, BK=BK, DOT_PRECISION=dot_precision(q.dtype), STRICT=gq is not None,
    )  # fmt: skip
    return dq, dk
