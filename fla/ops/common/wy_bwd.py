"""Backward of the WY stage (Triton): from ``dw, du`` to ``dk, dv, dbeta`` and the gate term.

Per chunk (notation of :mod:`fla.ops.common.wy`; ``E_ij = exp(G_i - G_j)`` for ``j < i``, else 0)::

    w = Tm Kb,  u = Tm Vb,   Kb = diag(beta exp(G)) k,  Vb = diag(beta) v,  Tm = (I + A)^{-1}
    A_ij = beta_i E_ij (k_i . k_j)

Hence ``dKb = Tm^T dw``, ``dVb = Tm^T du``, ``dTm = dw Kb^T + du Vb^T`` and, as
``d(X^{-1}) = -X^{-1} dX X^{-1}``, ``dA = -Tm^T dTm Tm^T`` (strictly lower part). With
``M = dA * beta_i * E``::

    dk    = dKb * beta exp(G) + M k + M^T k          (+ the ``dk`` of the output/state terms)
    dv    = dVb * beta
    dbeta = sum_v dVb v + exp(G) sum_k dKb k + sum_j dA_ij E_ij (k_i . k_j)
    dG_i  = sum_k dKb_i Kb_i + sum_j (dA * A)_ij - sum_j (dA * A)_ji

``M^T`` and ``dA^T`` are formed by their own products (``Tm dTm^T Tm``) and ``Tm^T`` is loaded
transposed: no ``tl.trans`` of a ``tl.dot`` result (that pattern miscompiles on Hopper with triton
3.4 - 3.7.0). The ``[BT, BK]`` / ``[BT, BV]`` tile products take their operands in the input dtype
with fp32 accumulation (bf16 products of bf16 data are exact); the ``[BT, BT]`` chain for ``dA`` is fp32.
No ``k k^T`` is formed: the ``dbeta`` and ``dG`` terms of ``dA * A`` are row sums of ``k * (N k)`` and
``k * (M^T k)`` (``N = dA * E``), which the ``dk`` products give anyway.

Erase keys (Comba, see :mod:`fla.ops.common.wy`): ``A_ij = beta_i exp(Ge_i - G_j) p_i.k_j`` and
``Kb = diag(beta exp(Ge)) p``: the row terms (``dKb``, ``M k``) go to ``dp`` and to ``dL/dGe``, the column term
``M^T p`` to ``dk`` and ``dL/dG``; with ``Ge = G - g`` the finished ``dg`` is the reverse cumsum of
``dL/dG + dL/dGe`` minus ``dL/dGe`` (``Ge_i`` holds ``-g_i``). Not with the per-key-channel gate below.

Per-key-channel gate (KDA, ``gk``): ``Kb = beta exp(G) * k`` per channel and
``A_ij = beta_i sum_c k_ic k_jc exp(G_ic - G_jc)``. The kernel then does the ``Kb`` / ``Vb`` part
(``dk = dKb beta exp(G)``, ``dbeta = sum dKb k exp(G) + sum dVb v``, ``dG = dKb * Kb`` per channel) and stores
``dA`` (strictly lower, fp32); the ``A`` part is the vector-gate scores backward
(:func:`fla.ops.common.chunk_intra_gk.chunk_gk_bwd_intra` with ``beta k`` for ``q``):
``R_i = sum_j dA_ij k_j exp(G_i - G_j)``, ``C_j = sum_i dA_ij beta_i k_i exp(G_i - G_j)``, and
``dk += beta R + C``, ``dbeta += sum_c k R``, ``dG += beta k R - k C``; ``dg`` is the chunk-local reverse cumsum
of ``dG`` plus the output / state stages' finished part.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk_intra_gk import chunk_gk_bwd_intra
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, block_size, dot_precision, given_heuristics
from fla.ops.common.wy import check_delta_gate, check_erase_inputs
from fla.utils import empty
from fla.utils.launch import lean_launch


@triton.jit
def _tile_and_grad(x, dx, o_row, m_t, o_c, C):
    """Columns ``o_c`` of ``x`` and of its gradient ``dx`` at token-head rows ``o_row`` (valid ``m_t``) of
    ``[rows, C]`` tensors: two ``[BT, BC]`` tiles in ``x``'s dtype, their offsets and mask."""
    m = m_t[:, None] & (o_c < C)[None, :]
    p = o_row[:, None] * C + o_c[None, :]
    b_x = tl.load(x + p, mask=m, other=0.0)
    return b_x, tl.load(dx + p, mask=m, other=0.0).to(b_x.dtype), p, m


@triton.jit
def _dtm_tile(x, dx, o_row, m_t, o_c, C, row_scale, b_dtm, b_dtmt, DOT_PRECISION: tl.constexpr):
    """One column tile's terms of ``dTm += dx (s x)^T`` and ``dTm^T += (s x) dx^T`` (``s = row_scale``,
    ``[BT]``); returns both accumulators and :func:`_tile_and_grad`'s tiles, offsets and mask."""
    b_x, b_dx, p, m = _tile_and_grad(x, dx, o_row, m_t, o_c, C)
    b_xs = (b_x * row_scale[:, None]).to(b_x.dtype)
    b_dtm += tl.dot(b_dx, tl.trans(b_xs), input_precision=DOT_PRECISION)
    b_dtmt += tl.dot(b_xs, tl.trans(b_dx), input_precision=DOT_PRECISION)
    return b_dtm, b_dtmt, b_x, b_dx, p, m


@lean_launch
@given_heuristics(USE_G="G", USE_GK="Gk", HAS_P="dp", SPLIT_G="Ge", IS_VARLEN="cu_seqlens")
@triton.autotune(
    # at most two pipeline stages: with 4 warps and 3 stages triton 3.6 gives non-finite dk / dg on Hopper (H100 and
    # H200, bf16, K = 128, V = 256: Gated DeltaProduct-340M's layer at T = 2048, the gated delta rule at T = 4096),
    # a different set each run; every other config is finite and deterministic there (scripts/gpu/delta_stage_check.py)
    configs=autotune_configs(stages=(1, 2)),
    key=["H", "K", "V", "BK", "BV", "USE_G", "USE_GK", "HAS_P", "SPLIT_G", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def chunk_delta_wy_bwd_kernel(
    k,
    p,
    v,
    beta,
    G,
    Ge,
    Gk,
    Tm,
    dw,
    du,
    dk_in,
    dk,
    dp,
    dv,
    dbeta,
    dG_in,
    dg,
    dA_out,
    dgk,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NG: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    USE_GK: tl.constexpr,
    HAS_P: tl.constexpr,
    SPLIT_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # p: the erase keys (k itself without them); Ge: their gate cumsum (read only with SPLIT_G, else G)
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_i = tl.arange(0, BT)  # [BT] row inside the chunk
    o_t = i_tc * BT + o_i  # [BT] position inside the sequence
    m_t = o_t < T_n
    o_row = (bos + o_t) * H + i_h  # [BT] token-head rows
    # valid rows i only: for a padded row G_i = 0 and exp(G_i - G_j) could overflow (0 * inf = NaN)
    m_strict = (o_i[:, None] > o_i[None, :]) & m_t[:, None]  # [BT(i), BT(j)] j < i
    m_strict_t = (o_i[:, None] < o_i[None, :]) & m_t[None, :]  # [BT(j), BT(i)] the same, transposed

    b_beta = tl.load(beta + o_row, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    if USE_G:
        b_g = tl.load(G + o_row, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        if SPLIT_G:
            b_ge = tl.load(Ge + o_row, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        else:
            b_ge = b_g
        b_e = tl.exp(b_ge)  # [BT]
    else:
        b_e = tl.full([BT], 1.0, dtype=tl.float32)
    b_scale = b_beta * b_e  # [BT] row factor of Kb
    # Tm^T: b_tmt[j, i] = Tm[i, j] (rows past the end load as 0: their dw, du rows are 0 too); the
    # [BT, B*] tile products take it in the input dtype (fp32 accumulation), as they take k, v, dw, du
    p_tmt = Tm + o_row[None, :] * BT + o_i[:, None]
    b_tmt = tl.load(p_tmt, mask=m_t[None, :], other=0.0).to(k.dtype.element_ty)  # [BT, BT]

    b_dtm = tl.zeros([BT, BT], dtype=tl.float32)  # dTm = dw Kb^T + du Vb^T
    b_dtmt = tl.zeros([BT, BT], dtype=tl.float32)  # dTm^T, by its own products
    b_dbeta = tl.zeros([BT], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)  # [BV]
        b_dtm, b_dtmt, b_v, b_du, p_tv, m_tv = _dtm_tile(
            v, du, o_row, m_t, o_v, V, b_beta, b_dtm, b_dtmt, DOT_PRECISION
        )
        b_dvb = tl.dot(b_tmt.to(b_du.dtype), b_du, input_precision=DOT_PRECISION)  # [BT, BV] Tm^T du
        tl.store(dv + p_tv, (b_dvb * b_beta[:, None]).to(dv.dtype.element_ty), mask=m_tv)
        b_dbeta += tl.sum(b_dvb * b_v.to(tl.float32), axis=1)
    if USE_GK:
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            b_k, b_dw, p_tk, m_tk = _tile_and_grad(k, dw, o_row, m_t, o_k, K)
            b_gk = tl.load(Gk + p_tk, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
            b_kb = (b_k * b_beta[:, None] * tl.exp(b_gk)).to(b_k.dtype)  # Kb, per channel
            b_dtm += tl.dot(b_dw, tl.trans(b_kb), input_precision=DOT_PRECISION)
            b_dtmt += tl.dot(b_kb, tl.trans(b_dw), input_precision=DOT_PRECISION)
    else:
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            b_dtm, b_dtmt, b_k1, b_dw1, p_k1, m_k1 = _dtm_tile(
                p, dw, o_row, m_t, o_k, K, b_scale, b_dtm, b_dtmt, DOT_PRECISION
            )

    # dA = -Tm^T dTm Tm^T: the [BT, BT] chain stays in fp32 (reloaded, not kept live across the loops)
    b_tmt32 = tl.load(p_tmt, mask=m_t[None, :], other=0.0)  # [BT, BT]
    b_dA = tl.dot(tl.dot(b_tmt32, b_dtm, input_precision=DOT_PRECISION), b_tmt32, input_precision=DOT_PRECISION)
    if USE_GK:
        # dA (strictly lower) for the vector-gate scores backward; the Kb part of dk, dbeta, dG per channel
        b_N = tl.where(m_strict, -b_dA, 0.0)  # [BT, BT] fp32
        tl.store(dA_out + o_row[:, None] * BT + o_i[None, :], b_N, mask=m_t[:, None])
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            b_k, b_dw, p_tk, m_tk = _tile_and_grad(k, dw, o_row, m_t, o_k, K)
            b_eg = tl.exp(tl.load(Gk + p_tk, mask=m_tk, other=0.0).to(tl.float32))  # [BT, BK] exp(G) <= 1
            b_dkb = tl.dot(b_tmt, b_dw, input_precision=DOT_PRECISION)  # [BT, BK] Tm^T dw
            b_dk = tl.load(dk_in + p_tk, mask=m_tk, other=0.0).to(tl.float32)
            b_dk += b_dkb * b_beta[:, None] * b_eg
            tl.store(dk + p_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
            b_dkbk = b_dkb * b_k.to(tl.float32) * b_eg  # [BT, BK]
            b_dbeta += tl.sum(b_dkbk, axis=1)
            tl.store(dgk + p_tk, b_dkbk * b_beta[:, None], mask=m_tk)
    else:
        b_tm32 = tl.load(Tm + o_row[:, None] * BT + o_i[None, :], mask=m_t[:, None], other=0.0)  # [BT, BT]
        b_dAt = tl.dot(tl.dot(b_tm32, b_dtmt, input_precision=DOT_PRECISION), b_tm32, input_precision=DOT_PRECISION)
        # with N = dA * E (dL/d(beta_i p_i.k_j)), M = diag(beta) N: M k = beta * (N k) and, as
        # (dA * A)_ij = M_ij p_i.k_j, its row sums are beta_i p_i.(N k)_i and its column sums k_j.(M^T p)_j
        if USE_G:
            b_E = tl.exp(tl.where(m_strict, b_ge[:, None] - b_g[None, :], float("-inf")))  # [BT, BT]
            b_Et = tl.exp(tl.where(m_strict_t, b_ge[None, :] - b_g[:, None], float("-inf")))  # [BT, BT] E^T
        else:
            b_E = tl.where(m_strict, 1.0, 0.0)
            b_Et = tl.where(m_strict_t, 1.0, 0.0)
        b_N = tl.where(m_strict, -b_dA * b_E, 0.0).to(k.dtype.element_ty)  # [BT, BT]
        b_Mt = tl.where(m_strict_t, -b_dAt * b_Et * b_beta[None, :], 0.0).to(k.dtype.element_ty)  # [BT, BT] M^T
        if USE_G:
            b_dG = tl.zeros([BT], dtype=tl.float32)  # dL/dG (the columns' gate)
            b_dGe = tl.zeros([BT], dtype=tl.float32)  # dL/dGe (the rows' gate; G itself without SPLIT_G)

        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            b_k, b_dw, p_tk, m_tk = _tile_and_grad(k, dw, o_row, m_t, o_k, K)
            if HAS_P:
                b_p = tl.load(p + p_tk, mask=m_tk, other=0.0)  # [BT, BK]
            else:
                b_p = b_k
            b_dkb = tl.dot(b_tmt, b_dw, input_precision=DOT_PRECISION)  # [BT, BK] Tm^T dw
            b_nk = tl.dot(b_N, b_k, input_precision=DOT_PRECISION)  # [BT, BK] N k
            b_mtp = tl.dot(b_Mt, b_p, input_precision=DOT_PRECISION)  # [BT, BK] M^T p
            b_drow = b_dkb * b_scale[:, None] + b_nk * b_beta[:, None]  # [BT, BK] the rows' (erase keys') part
            b_dk = tl.load(dk_in + p_tk, mask=m_tk, other=0.0).to(tl.float32) + b_mtp
            if HAS_P:
                tl.store(dp + p_tk, b_drow.to(dp.dtype.element_ty), mask=m_tk)
            else:
                b_dk += b_drow
            tl.store(dk + p_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
            b_pf = b_p.to(tl.float32)
            b_dkbp = tl.sum(b_dkb * b_pf, axis=1)  # [BT] p . dKb
            b_nkp = tl.sum(b_nk * b_pf, axis=1)  # [BT] sum_j N_ij p_i.k_j
            b_dbeta += b_dkbp * b_e + b_nkp
            if USE_G:
                b_dGe += b_dkbp * b_scale + b_beta * b_nkp
                b_dG -= tl.sum(b_mtp * b_k.to(tl.float32), axis=1)
    tl.store(dbeta + o_row, b_dbeta, mask=m_t)
    if USE_G:
        # the other stages' dL/dG (NG partial sums [NG, B*T*H]) joins this stage's; dg = chunk-local reverse cumsum
        b_dG += b_dGe
        for i_g in tl.static_range(NG):
            b_dG += tl.load(dG_in + i_g * T * tl.num_programs(1).to(tl.int64) + o_row, mask=m_t, other=0.0)
        b_dg = tl.cumsum(tl.where(m_t, b_dG, 0.0), axis=0, reverse=True)
        if SPLIT_G:
            b_dg -= b_dGe  # Ge_i = G_i - g_i
        tl.store(dg + o_row, b_dg, mask=m_t)


@lean_launch
@given_heuristics(HAS_DGK="dgk", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def chunk_gk_wy_bwd_finish_kernel(
    k,
    beta,
    dk_part,
    R,
    C,
    dgk,
    dk,
    dbeta,
    dG,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    HAS_DGK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk and head, the per-key-channel gate's WY backward from the intra products ``R, C``:
    ``dk = dk_part + beta R + C`` (``k.dtype``), ``dbeta += sum_c k R`` (in place) and, in place in ``dG``,
    ``dg = revcumsum_chunk(dG + k (beta R - C)) (+ dgk)``."""
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_t = i_tc * BT + tl.arange(0, BT)  # [BT]
    m_t = o_t < T_n
    o_row = (bos + o_t) * H + i_h  # [BT] token-head rows
    b_beta = tl.load(beta + o_row, mask=m_t, other=0.0).to(tl.float32)
    b_db = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_tk = m_t[:, None] & (o_k < K)[None, :]
        p_tk = o_row[:, None] * K + o_k[None, :]  # [BT, BK]
        b_k = tl.load(k + p_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_R = tl.load(R + p_tk, mask=m_tk, other=0.0)
        b_C = tl.load(C + p_tk, mask=m_tk, other=0.0)
        b_dk = tl.load(dk_part + p_tk, mask=m_tk, other=0.0) + b_beta[:, None] * b_R + b_C
        tl.store(dk + p_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
        b_db += tl.sum(b_k * b_R, axis=1)
        b_dG = tl.load(dG + p_tk, mask=m_tk, other=0.0) + b_k * (b_beta[:, None] * b_R - b_C)
        b_dg = tl.cumsum(b_dG, axis=0, reverse=True)  # rows past the end hold 0
        if HAS_DGK:
            b_dg += tl.load(dgk + p_tk, mask=m_tk, other=0.0)
        tl.store(dG + p_tk, b_dg, mask=m_tk)
    tl.store(dbeta + o_row, tl.load(dbeta + o_row, mask=m_t, other=0.0) + b_db, mask=m_t)


def chunk_delta_wy_bwd(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    Tm: torch.Tensor,
    dw: torch.Tensor,
    du: torch.Tensor,
    dk: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    dG: torch.Tensor | None = None,
    *,
    gk: torch.Tensor | None = None,
    dgk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
    g_erase: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Backward of :func:`fla.ops.common.wy.chunk_delta_wy_fwd` (contiguous inputs).

    Args:
        k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; Tm: ``[B, T, H, BT]`` fp32 from the forward;
            dw: ``[B, T, H, K]`` and du: ``[B, T, H, V]`` gradients of ``w`` and ``u``; dk:
            ``[B, T, H, K]`` the gradient ``k`` already has from the other stages (added in).
        g: ``[B, T, H]`` fp32 chunk-local cumsum of scalar log gates or ``None`` (as in the forward).
        dG: ``[NG, B, T, H]`` fp32: the other stages' ``dL/dG`` as ``NG`` partial sums (added in), or ``None``.
        gk: ``[B, T, H, K]`` fp32 chunk-local cumsum of per-key-channel log gates (instead of ``g``) or ``None``;
        dgk: ``[B, T, H, K]`` fp32 the other stages' finished (reverse-cumsummed) gate gradient, added in.
        p, g_erase: the forward's erase keys ``[B, T, H, K]`` and their gate cumsum ``G - g`` ``[B, T, H]`` fp32
            (Comba), or ``None``; not with ``gk``.
    Returns:
        ``dk`` (``k.dtype``), ``dv`` (``v.dtype``), ``dbeta`` ``[B, T, H]`` fp32 and the finished gate
        gradient fp32 shaped like the gate (the chunk-local reverse cumsum of all of ``dL/dG``; ``None``
        when ungated); with ``p`` also ``dp`` (``p.dtype``) after them.
    """
    check_delta_gate(g, k, gk)
    check_erase_inputs(k, g, p, g_erase, gk=gk)
    if gk is not None:
        return _wy_bwd_gk(k, v, beta, Tm, dw, du, dk, layout, gk, dgk)
    B, T, H, K = k.shape
    V = v.shape[-1]
    if dG is not None and (g is None or dG.dim() != 4 or dG.shape[1:] != (B, T, H)):
        raise ValueError(f"dG has shape {list(dG.shape)}, expected [NG, B, T, H] = [NG, {B}, {T}, {H}] with g given")
    dk_out = empty(B, T, H, K, dtype=k.dtype, device=k.device)
    dv = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    dbeta = empty(B, T, H, dtype=torch.float32, device=k.device)
    dg = None if g is None else empty(B, T, H, dtype=torch.float32, device=k.device)
    dp = None if p is None else empty(B, T, H, K, dtype=p.dtype, device=p.device)
    grid = (layout.row_chunks, B * H)
    chunk_delta_wy_bwd_kernel[grid](
        k, k if p is None else p, v, beta, g, g_erase, None, Tm, dw, du, dk, dk_out, dp, dv, dbeta, dG, dg, None,
        None, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=block_size(K), BV=block_size(V), NG=0 if dG is None else dG.shape[0],
        DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return (dk_out, dv, dbeta, dg) if p is None else (dk_out, dv, dbeta, dg, dp)


def _wy_bwd_gk(k, v, beta, Tm, dw, du, dk, layout: ChunkLayout, Gk, dgk):
    """:func:`chunk_delta_wy_bwd` for the per-key-channel gate (see the module doc): the kernel's ``Kb`` /
    ``Vb`` part, then the scores' part by the vector-gate intra-chunk backward, added in by one more kernel."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = layout.chunk_size
    dk_part = empty(B, T, H, K, dtype=torch.float32, device=k.device)
    dv = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    dbeta = empty(B, T, H, dtype=torch.float32, device=k.device)
    dA = empty(B, T, H, BT, dtype=torch.float32, device=k.device)
    dG = empty(B, T, H, K, dtype=torch.float32, device=k.device)
    chunk_delta_wy_bwd_kernel[(layout.row_chunks, B * H)](
        k, k, v, beta, None, None, Gk, Tm, dw, du, dk, dk_part, None, dv, dbeta, None, None, dA, dG, layout.cu_seqlens,
        layout.chunk_indices, T, H=H, K=K, V=V, BT=BT, BK=block_size(K), BV=block_size(V), NG=0,
        DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    # the scores' part: R, C from the vector-gate intra backward (beta k in the queries' place), then one
    # kernel adds them in and finishes dg in place in dG
    kb = torch.mul(k, beta.unsqueeze(-1)).to(k.dtype)  # [B, T, H, K]
    R, C = chunk_gk_bwd_intra(kb, k, Gk, dA, layout)  # [B, T, H, K] fp32 each
    dk_out = empty(B, T, H, K, dtype=k.dtype, device=k.device)
    chunk_gk_wy_bwd_finish_kernel[(layout.row_chunks, B * H)](
        k, beta, dk_part, R, C, dgk, dk_out, dbeta, dG, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, BT=BT, BK=block_size(K),
    )  # fmt: skip
    return dk_out, dv, dbeta, dG
