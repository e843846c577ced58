"""WY stage of the delta-rule family (Triton): the ``k k^T`` scores and the per-chunk triangular solve.

For every chunk of ``BT`` tokens (``G`` the chunk-local cumsum of the log gates, zero when ungated)::

    A_ij = beta_i exp(G_i - G_j) k_i.k_j   (j < i, else 0)     the beta-scaled, gated k k^T scores
    Tm   = (I + A)^{-1}                     (unit lower triangular)
    w    = Tm (beta exp(G) k),   u = Tm (beta v)

Gate kinds (as in the GLA stages): none (the delta rule), a scalar per-head gate ``g [B, T, H]`` (the gated
delta rule) or a per-key-channel gate ``gk [B, T, H, K]`` (KDA). The scalar-gate scores are formed from plain
``k_I k_J^T`` tiles with the gate applied afterwards (:func:`_scores`); a per-key-channel gate makes them
``sum_k k_ik k_jk exp(G_ik - G_jk)``, which do not factor so: they come precomputed (``Akk``, the vector-gate
scores of :mod:`fla.ops.common.chunk_intra_gk` with ``k`` for ``q``) and the solve only scales their rows by
``beta``; ``w = Tm (beta exp(G) k)`` then scales ``k`` per channel.

Erase keys (Comba): with ``p`` (the key the erase reads the state with) and ``g_erase`` (``Ge``, the cumsum
at which the erase reads the state: ``G - g``, the state before the token's own decay) the rows use them,
``A_ij = beta_i exp(Ge_i - G_j) p_i.k_j`` and ``w = Tm (beta exp(Ge) p)``; ``p = k, Ge = G`` is the above.
Erase keys go with no gate or the scalar gate only: with a per-key-channel gate the rows' scores would be
``sum_k p_ik k_jk exp(Ge_ik - G_jk)`` with a per-channel ``Ge``, which these stages do not form (``p`` with
``gk`` or ``Akk`` raises ``ValueError``).

``Tm`` is solved block by block (:func:`chunk_delta_solve`): the chunk's ``BT / BC`` diagonal
``[BC, BC]`` blocks are inverted by forward substitution in fp32 registers (``BC - 1`` dependent row
steps each), then the blocks below the diagonal follow by block forward substitution,
``Tm_IJ = -Tm_II sum_{J <= L < I} A_IL Tm_LJ``, a few small matmuls. Compared with a row-by-row
substitution over the whole chunk (``BT - 1`` dependent steps on ``[BT, BT]`` tiles) this is the
same algorithm (as stable) with ``(BT / BC)^2`` times less work on the dependent chain.
``w, u`` are then one matmul each (:func:`chunk_delta_wy_fwd`). The math is in ``../delta_rule/README.md``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, block_size, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch

SUB_BLOCK = 16  # rows of the diagonal blocks inverted by forward substitution


@triton.jit
def _rows(x, o_r, m_r, o_c, m_c, C):
    """Rows ``o_r`` (valid ``m_r``) and columns ``o_c`` (valid ``m_c``) of a ``[rows, C]`` tensor, 0 outside
    (in its dtype: ``k k^T`` of bf16/fp16 keys is exact with fp32 accumulation)."""
    return tl.load(x + o_r[:, None] * C + o_c[None, :], mask=m_r[:, None] & m_c[None, :], other=0.0)


@triton.jit
def _scores(b_kk, beta, G, Ge, o_ra, m_a, o_rb, m_b, USE_G: tl.constexpr):
    """``A_ab = beta_a exp(Ge_a - G_b) p_a.k_b`` from ``b_kk = p_a k_b^T`` for row sets ``a``, ``b`` (token-head
    rows ``o_r*``, valid ``m_*``), ``[BC, BC]`` fp32; invalid rows/columns are 0 (and never exponentiated).
    ``Ge`` is ``G`` (and ``p`` is ``k``) unless the op has erase keys."""
    m_ab = m_a[:, None] & m_b[None, :]
    b_beta = tl.load(beta + o_ra, mask=m_a, other=0.0).to(tl.float32)
    if USE_G:
        b_ga = tl.load(Ge + o_ra, mask=m_a, other=0.0).to(tl.float32)
        b_gb = tl.load(G + o_rb, mask=m_b, other=0.0).to(tl.float32)
        b_kk *= tl.exp(tl.where(m_ab, b_ga[:, None] - b_gb[None, :], float("-inf")))
    return tl.where(m_ab, b_beta[:, None] * b_kk, 0.0)


@triton.jit
def _unit_lower_inverse(b_a, BC: tl.constexpr):
    """``(I + A)^{-1}`` of a strictly lower ``[BC, BC]`` fp32 block ``A`` by forward substitution:
    with ``M = -A`` and ``R = (I + A)^{-1} - I``, ``R_i = M_i + sum_{j < i} M_ij R_j``, row after row."""
    o = tl.arange(0, BC)
    b_m = -b_a
    for i in range(1, BC):
        m_row = o == i
        b_r = tl.sum(tl.where(m_row[:, None], b_m, 0.0), axis=0)  # [BC] M_i
        b_r += tl.sum(b_r[:, None] * b_m, axis=0)  # rows j < i already hold R_j; M_ij = 0 for j >= i
        b_m = tl.where(m_row[:, None], b_r[None, :], b_m)
    return b_m + (o[:, None] == o[None, :]).to(tl.float32)


@triton.jit
def _mm(a, b):
    """fp32 ``[BC, BC] @ [BC, BC]`` with fp32 products (the inverse is worth the exactness)."""
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _akk_block(Akk, o_ra, m_a, o_cb, BT: tl.constexpr):
    """Block of the precomputed vector-gate scores ``Akk`` ``[rows, BT]`` at token-head rows ``o_ra`` (valid
    ``m_a``) and chunk columns ``o_cb`` (``[BC]``), fp32, 0 for invalid rows."""
    return tl.load(Akk + o_ra[:, None] * BT + o_cb[None, :], mask=m_a[:, None], other=0.0).to(tl.float32)


@lean_launch
@given_heuristics(USE_G="G", USE_AKK="Akk", HAS_P="p", IS_VARLEN="cu_seqlens")
@triton.autotune(
    autotune_configs(warps=(1, 2, 4), stages=(1, 2)),
    key=["H", "K", "BK", "USE_G", "USE_AKK", "HAS_P", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def chunk_delta_solve_kernel(
    k,
    p,
    beta,
    G,
    Ge,
    Akk,
    Tm,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    USE_AKK: tl.constexpr,
    HAS_P: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per chunk and head; the chunk is 4 blocks of BC rows (BT == 4 * BC):
    # Tm_II = (I + A_II)^{-1}, Tm_IJ = -Tm_II sum_{J <= L < I} A_IL Tm_LJ (I > J), 0 above
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_c = tl.arange(0, BC)  # [BC]
    o_t0 = i_tc * BT + o_c  # [BC] positions of block 0; block I is o_t0 + I * BC
    o_t1, o_t2, o_t3 = o_t0 + BC, o_t0 + 2 * BC, o_t0 + 3 * BC
    m_0, m_1, m_2, m_3 = o_t0 < T_n, o_t1 < T_n, o_t2 < T_n, o_t3 < T_n
    o_r0, o_r1 = (bos + o_t0) * H + i_h, (bos + o_t1) * H + i_h  # [BC] token-head rows
    o_r2, o_r3 = (bos + o_t2) * H + i_h, (bos + o_t3) * H + i_h
    m_strict = o_c[:, None] > o_c[None, :]

    if USE_AKK:
        # vector gate: the scores sum_k k_ik k_jk exp(G_ik - G_jk) come precomputed; rows scaled by beta
        a00, a11 = _akk_block(Akk, o_r0, m_0, o_c, BT), _akk_block(Akk, o_r1, m_1, o_c + BC, BT)
        a22, a33 = _akk_block(Akk, o_r2, m_2, o_c + 2 * BC, BT), _akk_block(Akk, o_r3, m_3, o_c + 3 * BC, BT)
        a10, a20 = _akk_block(Akk, o_r1, m_1, o_c, BT), _akk_block(Akk, o_r2, m_2, o_c, BT)
        a21, a30 = _akk_block(Akk, o_r2, m_2, o_c + BC, BT), _akk_block(Akk, o_r3, m_3, o_c, BT)
        a31, a32 = _akk_block(Akk, o_r3, m_3, o_c + BC, BT), _akk_block(Akk, o_r3, m_3, o_c + 2 * BC, BT)
        a00 = tl.where(m_strict, _scores(a00, beta, G, G, o_r0, m_0, o_r0, m_0, False), 0.0)
        a11 = tl.where(m_strict, _scores(a11, beta, G, G, o_r1, m_1, o_r1, m_1, False), 0.0)
        a22 = tl.where(m_strict, _scores(a22, beta, G, G, o_r2, m_2, o_r2, m_2, False), 0.0)
        a33 = tl.where(m_strict, _scores(a33, beta, G, G, o_r3, m_3, o_r3, m_3, False), 0.0)
        a10 = _scores(a10, beta, G, G, o_r1, m_1, o_r0, m_0, False)
        a20 = _scores(a20, beta, G, G, o_r2, m_2, o_r0, m_0, False)
        a21 = _scores(a21, beta, G, G, o_r2, m_2, o_r1, m_1, False)
        a30 = _scores(a30, beta, G, G, o_r3, m_3, o_r0, m_0, False)
        a31 = _scores(a31, beta, G, G, o_r3, m_3, o_r1, m_1, False)
        a32 = _scores(a32, beta, G, G, o_r3, m_3, o_r2, m_2, False)
    else:
        # p_I k_J^T (p = k without erase keys) for the blocks on and below the diagonal, each tile loaded once
        kk00, kk11 = tl.zeros([BC, BC], dtype=tl.float32), tl.zeros([BC, BC], dtype=tl.float32)
        kk22, kk33 = tl.zeros([BC, BC], dtype=tl.float32), tl.zeros([BC, BC], dtype=tl.float32)
        kk10, kk20 = tl.zeros([BC, BC], dtype=tl.float32), tl.zeros([BC, BC], dtype=tl.float32)
        kk21, kk30 = tl.zeros([BC, BC], dtype=tl.float32), tl.zeros([BC, BC], dtype=tl.float32)
        kk31, kk32 = tl.zeros([BC, BC], dtype=tl.float32), tl.zeros([BC, BC], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            m_k = o_k < K
            b_k0, b_k1 = _rows(k, o_r0, m_0, o_k, m_k, K), _rows(k, o_r1, m_1, o_k, m_k, K)  # [BC, BK]
            b_k2, b_k3 = _rows(k, o_r2, m_2, o_k, m_k, K), _rows(k, o_r3, m_3, o_k, m_k, K)
            if HAS_P:  # the rows' erase keys
                b_p0, b_p1 = _rows(p, o_r0, m_0, o_k, m_k, K), _rows(p, o_r1, m_1, o_k, m_k, K)  # [BC, BK]
                b_p2, b_p3 = _rows(p, o_r2, m_2, o_k, m_k, K), _rows(p, o_r3, m_3, o_k, m_k, K)
            else:
                b_p0, b_p1, b_p2, b_p3 = b_k0, b_k1, b_k2, b_k3
            b_k0t, b_k1t, b_k2t = tl.trans(b_k0), tl.trans(b_k1), tl.trans(b_k2)  # [BK, BC]
            kk00 += tl.dot(b_p0, b_k0t, input_precision=DOT_PRECISION)
            kk11 += tl.dot(b_p1, b_k1t, input_precision=DOT_PRECISION)
            kk22 += tl.dot(b_p2, b_k2t, input_precision=DOT_PRECISION)
            kk33 += tl.dot(b_p3, tl.trans(b_k3), input_precision=DOT_PRECISION)
            kk10 += tl.dot(b_p1, b_k0t, input_precision=DOT_PRECISION)
            kk20 += tl.dot(b_p2, b_k0t, input_precision=DOT_PRECISION)
            kk21 += tl.dot(b_p2, b_k1t, input_precision=DOT_PRECISION)
            kk30 += tl.dot(b_p3, b_k0t, input_precision=DOT_PRECISION)
            kk31 += tl.dot(b_p3, b_k1t, input_precision=DOT_PRECISION)
            kk32 += tl.dot(b_p3, b_k2t, input_precision=DOT_PRECISION)
        a00 = tl.where(m_strict, _scores(kk00, beta, G, Ge, o_r0, m_0, o_r0, m_0, USE_G), 0.0)
        a11 = tl.where(m_strict, _scores(kk11, beta, G, Ge, o_r1, m_1, o_r1, m_1, USE_G), 0.0)
        a22 = tl.where(m_strict, _scores(kk22, beta, G, Ge, o_r2, m_2, o_r2, m_2, USE_G), 0.0)
        a33 = tl.where(m_strict, _scores(kk33, beta, G, Ge, o_r3, m_3, o_r3, m_3, USE_G), 0.0)
        a10 = _scores(kk10, beta, G, Ge, o_r1, m_1, o_r0, m_0, USE_G)
        a20 = _scores(kk20, beta, G, Ge, o_r2, m_2, o_r0, m_0, USE_G)
        a21 = _scores(kk21, beta, G, Ge, o_r2, m_2, o_r1, m_1, USE_G)
        a30 = _scores(kk30, beta, G, Ge, o_r3, m_3, o_r0, m_0, USE_G)
        a31 = _scores(kk31, beta, G, Ge, o_r3, m_3, o_r1, m_1, USE_G)
        a32 = _scores(kk32, beta, G, Ge, o_r3, m_3, o_r2, m_2, USE_G)

    t00, t11 = _unit_lower_inverse(a00, BC), _unit_lower_inverse(a11, BC)
    t22, t33 = _unit_lower_inverse(a22, BC), _unit_lower_inverse(a33, BC)
    t10 = -_mm(t11, _mm(a10, t00))
    t21 = -_mm(t22, _mm(a21, t11))
    t20 = -_mm(t22, _mm(a20, t00) + _mm(a21, t10))
    t32 = -_mm(t33, _mm(a32, t22))
    t31 = -_mm(t33, _mm(a31, t11) + _mm(a32, t21))
    t30 = -_mm(t33, _mm(a30, t00) + _mm(a31, t10) + _mm(a32, t20))

    b_zero = tl.zeros([BC, BC], dtype=tl.float32)
    o_col = o_c[None, :]  # [1, BC] column inside a block
    p_0, p_1 = Tm + o_r0[:, None] * BT + o_col, Tm + o_r1[:, None] * BT + o_col  # [BC, BC] at block column 0
    p_2, p_3 = Tm + o_r2[:, None] * BT + o_col, Tm + o_r3[:, None] * BT + o_col
    tl.store(p_0, t00, mask=m_0[:, None])
    tl.store(p_0 + BC, b_zero, mask=m_0[:, None])
    tl.store(p_0 + 2 * BC, b_zero, mask=m_0[:, None])
    tl.store(p_0 + 3 * BC, b_zero, mask=m_0[:, None])
    tl.store(p_1, t10, mask=m_1[:, None])
    tl.store(p_1 + BC, t11, mask=m_1[:, None])
    tl.store(p_1 + 2 * BC, b_zero, mask=m_1[:, None])
    tl.store(p_1 + 3 * BC, b_zero, mask=m_1[:, None])
    tl.store(p_2, t20, mask=m_2[:, None])
    tl.store(p_2 + BC, t21, mask=m_2[:, None])
    tl.store(p_2 + 2 * BC, t22, mask=m_2[:, None])
    tl.store(p_2 + 3 * BC, b_zero, mask=m_2[:, None])
    tl.store(p_3, t30, mask=m_3[:, None])
    tl.store(p_3 + BC, t31, mask=m_3[:, None])
    tl.store(p_3 + 2 * BC, t32, mask=m_3[:, None])
    tl.store(p_3 + 3 * BC, t33, mask=m_3[:, None])


@lean_launch
@given_heuristics(USE_G="G", USE_GK="Gk", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["H", "K", "V", "BK", "BV", "USE_G", "USE_GK", "DOT_PRECISION"])
@triton.jit(do_not_specialize=["T"])
def chunk_delta_wy_fwd_kernel(
    k,
    v,
    beta,
    G,
    Gk,
    Tm,
    w,
    u,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    USE_GK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per chunk and head: w = Tm (beta exp(G) k), u = Tm (beta v), the products in the
    # input dtype with fp32 accumulation (w and u are stored in it)
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_i = tl.arange(0, BT)  # [BT] row inside the chunk
    o_t = i_tc * BT + o_i  # [BT] position inside the sequence
    m_t = o_t < T_n
    o_row = (bos + o_t) * H + i_h  # [BT] token-head rows

    b_beta = tl.load(beta + o_row, mask=m_t, other=0.0).to(tl.float32)  # [BT]; 0 past the end
    b_scale = b_beta  # [BT] row factor of the right-hand side for k
    if USE_G:
        b_g = tl.load(G + o_row, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        b_scale = b_beta * tl.exp(b_g)
    b_tm = tl.load(Tm + o_row[:, None] * BT + o_i[None, :], mask=m_t[:, None], other=0.0)  # [BT, BT]
    b_tm = b_tm.to(k.dtype.element_ty)

    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)  # [BK]
        m_k = m_t[:, None] & (o_k < K)[None, :]
        p_k = o_row[:, None] * K + o_k[None, :]  # [BT, BK]
        b_k = tl.load(k + p_k, mask=m_k, other=0.0)
        if USE_GK:  # the per-channel factor exp(G) <= 1 (G is a chunk-local cumsum of log decays)
            b_gk = tl.load(Gk + p_k, mask=m_k, other=0.0).to(tl.float32)  # [BT, BK]
            b_k = (b_k * b_scale[:, None] * tl.exp(b_gk)).to(b_k.dtype)
        else:
            b_k = (b_k * b_scale[:, None]).to(b_k.dtype)
        b_w = tl.dot(b_tm, b_k, input_precision=DOT_PRECISION)  # [BT, BK]
        tl.store(w + p_k, b_w.to(w.dtype.element_ty), mask=m_k)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)  # [BV]
        m_v = m_t[:, None] & (o_v < V)[None, :]
        p_v = o_row[:, None] * V + o_v[None, :]  # [BT, BV]
        b_v = tl.load(v + p_v, mask=m_v, other=0.0)
        b_v = (b_v * b_beta[:, None]).to(b_v.dtype)
        b_u = tl.dot(b_tm.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)  # [BT, BV]
        tl.store(u + p_v, b_u.to(u.dtype.element_ty), mask=m_v)


def chunk_delta_solve(
    k: torch.Tensor,
    beta: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    *,
    Akk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
    g_erase: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Tm`` ``[B, T, H, BT]`` fp32: row ``i`` of its chunk's ``(I + A)^{-1}``, ``A`` as in the module doc.

    Args:
        k: ``[B, T, H, K]``; beta: ``[B, T, H]``; layout: the chunking (``chunk_size == 4 * SUB_BLOCK``);
        g: ``[B, T, H]`` fp32 chunk-local cumsum of scalar log gates, or ``None`` (no gate);
        Akk: ``[B, T, H, BT]`` fp32 precomputed unscaled scores ``sum_k k_ik k_jk exp(G_ik - G_jk)``
            (``j <= i``; the per-key-channel gate), or ``None`` (``k k^T`` formed here). Not with ``g``;
        p: ``[B, T, H, K]`` erase keys (``None``: ``k``); g_erase: ``[B, T, H]`` fp32 cumsum the erase rows
            use (``None``: ``g``; needs ``g``). Not with ``Akk``.
    """
    check_delta_gate(g, k)
    check_erase_inputs(k, g, p, g_erase, Akk=Akk)
    if Akk is not None and (g is not None or Akk.shape != (*k.shape[:3], layout.chunk_size)):
        raise ValueError(
            f"Akk has shape {list(Akk.shape)}, expected [B, T, H, BT] = {[*k.shape[:3], layout.chunk_size]} "
            "and no scalar gate g"
        )
    B, T, H, K = k.shape
    BT = layout.chunk_size
    if BT != 4 * SUB_BLOCK:
        raise ValueError(f"the blocked solve needs chunk_size == {4 * SUB_BLOCK}, got {BT}")
    Tm = empty(B, T, H, BT, dtype=torch.float32, device=k.device)
    chunk_delta_solve_kernel[(layout.row_chunks, B * H)](
        k, p, beta, g, g if g_erase is None else g_erase, Akk, Tm, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, BT=BT, BC=SUB_BLOCK, BK=block_size(K), DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return Tm


def chunk_delta_wy_fwd(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    Tm: torch.Tensor | None = None,
    *,
    gk: torch.Tensor | None = None,
    Akk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
    g_erase: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The WY stage (contiguous inputs).

    Args:
        k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; layout: the chunking; g: ``[B, T, H]``
            fp32 chunk-local cumsum of scalar log gates (:func:`fla.ops.common.cumsum.chunk_local_cumsum`)
            or ``None``; Tm: a previous call's ``Tm`` (the backward recomputes ``w, u`` from it without the
            triangular solve) or ``None``; gk: ``[B, T, H, K]`` fp32 chunk-local cumsum of per-key-channel log
            gates (instead of ``g``) with Akk: its scores (:func:`chunk_delta_solve`; needed when ``Tm`` is
            ``None``); p, g_erase: the erase keys ``[B, T, H, K]`` and their gate cumsum ``[B, T, H]`` fp32
            (Comba; ``None``: ``k`` and ``g``), giving ``w = Tm (beta exp(g_erase) p)``; not with ``gk``.
    Returns:
        ``Tm`` ``[B, T, H, BT]`` fp32 (row ``i`` of its chunk's ``(I + A)^{-1}``), ``w``
        ``[B, T, H, K]`` (``k.dtype``) and ``u`` ``[B, T, H, V]`` (``v.dtype``).
    """
    check_delta_gate(g, k, gk)
    check_erase_inputs(k, g, p, g_erase, gk=gk, Akk=Akk)
    if gk is not None and Tm is None and Akk is None:
        raise ValueError("the per-key-channel gate gk needs its scores Akk (or a previous Tm)")
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = layout.chunk_size
    if Tm is None:
        Tm = chunk_delta_solve(k, beta, layout, g, Akk=Akk, p=p, g_erase=g_erase)
    # w's right-hand side is built from the erase keys and their gate (the kernel's k and G)
    k = k if p is None else p
    g = g if g_erase is None else g_erase
    w, u = empty(B, T, H, K, dtype=k.dtype, device=k.device), empty(B, T, H, V, dtype=v.dtype, device=v.device)
    grid = (layout.row_chunks, B * H)
    chunk_delta_wy_fwd_kernel[grid](
        k, v, beta, g, gk, Tm, w, u, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, V=V, BT=BT, BK=block_size(K), BV=block_size(V), DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return Tm, w, u


def check_delta_gate(g: torch.Tensor | None, k: torch.Tensor, gk: torch.Tensor | None = None) -> None:
    """The delta-rule stages take no gate, a scalar one ``g`` ``[B, T, H]`` or a per-key-channel one ``gk``
    ``[B, T, H, K]`` (chunk-local cumsums, fp32), not both."""
    if g is not None and g.shape != k.shape[:3]:
        raise ValueError(
            f"g has shape {list(g.shape)}, expected a scalar gate [B, T, H] = {list(k.shape[:3])} "
            "(a per-key-channel gate is the gk argument)"
        )
    if gk is not None and gk.shape != k.shape:
        raise ValueError(f"gk has shape {list(gk.shape)}, expected a vector gate [B, T, H, K] = {list(k.shape)}")
    if g is not None and gk is not None:
        raise ValueError("the delta-rule stages take a scalar gate g or a vector gate gk, not both")


def check_erase_inputs(
    k: torch.Tensor,
    g: torch.Tensor | None,
    p: torch.Tensor | None,
    g_erase: torch.Tensor | None,
    gk: torch.Tensor | None = None,
    Akk: torch.Tensor | None = None,
) -> None:
    """Erase keys ``p`` have ``k``'s shape and dtype; their gate cumsum ``g_erase`` ``[B, T, H]`` comes with
    ``g``; neither goes with the per-key-channel gate ``gk`` (or its precomputed scores ``Akk``)."""
    if (p is not None or g_erase is not None) and (gk is not None or Akk is not None):
        raise ValueError(
            "erase keys p (Comba) with a per-key-channel gate gk (KDA) are not supported by the delta-rule "
            "stages: p goes with no gate or a scalar gate g"
        )
    if p is not None and (p.shape != k.shape or p.dtype != k.dtype):
        raise ValueError(f"p has shape {list(p.shape)} / {p.dtype}, expected k's {list(k.shape)} / {k.dtype}")
    if g_erase is not None and (g is None or g_erase.shape != g.shape):
        raise ValueError(
            f"g_erase has shape {list(g_erase.shape)}, expected g's [B, T, H] = {list(k.shape[:3])} with g given"
        )
