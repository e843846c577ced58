"""Backward stages of the chunk pipeline: ``dv`` and ``dq, dk, dg``.

With ``D_ij = exp(G_i - G_j)`` for ``i >= j`` (0 above the diagonal), ``h`` the state before the
chunk, ``dh`` the gradient of the state after it and ``L`` the chunk's last row::

    dv_j = sum_i scale * (q_i . k_j) D_ij do_i       + (k_j * exp(G_L - G_j)) dh
    dA   = scale * (do v^T) * D
    dq   = dA k + scale * exp(G) * (do h^T)
    dk   = dA^T q + exp(G_L - G) * (v dh^T)

Gate gradient (the cumsum-reversal trick): every ``exp`` argument is a difference of chunk-local
cumsums, so ``dL/dG_i = q_i . dq_i - k_i . dk_i`` (summed over K for scalar gates), plus, at the
last row, the decay of the carried state ``exp(G_L) sum(h * dh) + sum_j k_j . dk_inter_j``
(``dk_inter`` = the ``dh`` part of ``dk``). ``dg`` is the chunk-local reverse cumsum of ``dL/dG``.
(With whole-sequence cumsums the state terms vanish, ``dL/dG_t = q_t . dq_t - v_t . dv_t`` exactly, but a
reverse cumsum over the sequence then adds up every row's rounding error: measured on the gated delta rule,
``dg`` error 0.18 at T=8192 in bf16 against 0.06 allowed; the chunk-local form adds 64 rows.)
Vector gates pass ``A`` (to the dv stage) and the intra-chunk ``dq``/``dk`` (to the dqkg stage).
A value-side gate ``gv [B, T, H, V]`` (GSA's first pass, :mod:`fla.ops.common.chunk_gv`) passes its
intra-chunk ``dA`` (``sum_v do_iv v_jv exp(G_iv - G_jv)``, causal, unscaled) to the dqkg stage, which then
forms ``dq = scale * ((do * exp(G)) h^T + dA k)`` and ``dk = (v * exp(G_L - G)) dh^T + scale * dA^T q``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk_h import check_grouped_heads
from fla.ops.common.cumsum import SCALAR_GATE_FLAGS, chunk_scalar_gates
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, block_size, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv


@lean_launch
@given_heuristics(**SCALAR_GATE_FLAGS, USE_GK="gk", USE_A="A", USE_DH="dh", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=autotune_configs(),
    key=["H", "HQK", "K", "V", "BK", "BV", "USE_G", "USE_GK", "USE_A", "USE_DH", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def chunk_dv_bwd_kernel(
    q,
    k,
    g,
    g_gamma,
    gk,
    A,
    do,
    dh,
    dv,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    HQK: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_G: tl.constexpr,
    USE_GK: tl.constexpr,
    USE_A: tl.constexpr,
    USE_DH: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HQK)  # the q / k head (grouped heads: HQK < H)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_i = tl.arange(0, BT)  # [BT]
    o_t = i_tc * BT + o_i
    m_t = o_t < T_n
    i_last = tl.minimum(i_tc * BT + BT, T_n) - 1
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]

    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    b_At = tl.zeros([BT, BT], dtype=tl.float32)  # b_At[j, i] = A[i, j]
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)  # [BK]
        m_k = o_k < K
        o_tk = ((bos + o_t[:, None]) * HQK + i_hk) * K + o_k[None, :]  # [BT, BK] (gk: HQK = H)
        m_tk = m_t[:, None] & m_k[None, :]
        b_k = tl.load(k + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
        if USE_DH:
            p_dh = dh + (i_ch * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]
            b_dh = tl.load(p_dh, mask=m_k[:, None] & m_v[None, :], other=0.0)  # [BK, BV]
            if USE_GK:
                b_gk = tl.load(gk + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
                b_gkl = tl.load(gk + ((bos + i_last) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
                b_kg = (b_k * tl.exp(tl.where(m_tk, b_gkl[None, :] - b_gk, 0.0))).to(b_k.dtype)
            else:
                b_kg = b_k
            b_dv += tl.dot(b_kg, b_dh.to(b_k.dtype), input_precision=DOT_PRECISION)
        if not USE_A:
            o_qt = ((bos + o_t[None, :]) * HQK + i_hk) * K + o_k[:, None]  # [BK, BT]: q transposed
            b_qt = tl.load(q + o_qt, mask=m_k[:, None] & m_t[None, :], other=0.0)
            b_At += tl.dot(b_k, b_qt, input_precision=DOT_PRECISION)

    m_At = (o_i[:, None] <= o_i[None, :]) & m_t[None, :]  # [BT(j), BT(i)]: i >= j, row i valid
    if USE_G:
        b_g, b_gl = chunk_scalar_gates(g, g_gamma, bos, o_t, m_t, i_last, i_h, H, HAS_G)
        if USE_DH:
            b_dv *= tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[:, None]
        b_At *= tl.exp(tl.where(m_At, b_g[None, :] - b_g[:, None], float("-inf")))
    if USE_A:
        p_At = A + ((bos + o_t[None, :]) * H + i_h) * BT + o_i[:, None]
        b_At = tl.load(p_At, mask=m_t[None, :], other=0.0)
    else:
        b_At = tl.where(m_At, b_At * scale, 0.0)
    o_tv = ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :]  # [BT, BV]
    b_do = tl.load(do + o_tv, mask=m_tv, other=0.0)
    b_dv += tl.dot(b_At.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
    tl.store(dv + o_tv, b_dv.to(dv.dtype.element_ty), mask=m_tv)


@lean_launch
@given_heuristics(
    **SCALAR_GATE_FLAGS,
    USE_GK="gk",
    USE_GQ="gq",
    USE_GV="gv",
    USE_DA="dA",
    STORE_DG="dg",
    STORE_DW="dw",
    IS_VARLEN="cu_seqlens",
)
@triton.autotune(
    configs=autotune_configs(),
    key=[
        "H",
        "HQK",
        "K",
        "V",
        "BK",
        "BV",
        "USE_G",
        "USE_GK",
        "USE_GQ",
        "USE_GV",
        "STORE_DG",
        "STORE_DW",
        "DOT_PRECISION",
    ],
)
@triton.jit(do_not_specialize=["T"])
def chunk_dqkg_bwd_kernel(
    q,
    k,
    v,
    h,
    g,
    g_gamma,
    gk,
    gq,
    gv,
    dA,
    do,
    dh,
    dq_intra,
    dk_intra,
    dv,
    dq,
    dk,
    dw,
    dg,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    HQK: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_G: tl.constexpr,
    USE_GK: tl.constexpr,
    USE_GQ: tl.constexpr,
    USE_GV: tl.constexpr,
    USE_DA: tl.constexpr,
    STORE_DG: tl.constexpr,
    STORE_DW: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_k, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_i = tl.arange(0, BT)  # [BT]
    o_t = i_tc * BT + o_i
    m_t = o_t < T_n
    i_last = tl.minimum(i_tc * BT + BT, T_n) - 1
    o_k = i_k * BK + tl.arange(0, BK)  # [BK]
    m_k = o_k < K
    o_tk = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
    m_tk = m_t[:, None] & m_k[None, :]

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)  # do h^T
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)  # v dh^T
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)  # do v^T
    b_dAt = tl.zeros([BT, BT], dtype=tl.float32)  # v do^T (its transpose, formed by its own dot)
    b_hdh = tl.zeros([BK], dtype=tl.float32)  # sum_v h * dh
    b_dw = tl.zeros([BT, BK], dtype=tl.float32)  # dv h^T (STORE_DW)
    p_state = (i_ch * H + i_h) * K * V
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)  # [BV]
        m_v = o_v < V
        o_tv = ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :]  # [BT, BV]
        m_tv = m_t[:, None] & m_v[None, :]
        b_do = tl.load(do + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
        b_v = tl.load(v + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
        o_vk = o_k[None, :] * V + o_v[:, None]  # [BV, BK]: a state block transposed
        m_vk = m_k[None, :] & m_v[:, None]
        b_ht = tl.load(h + p_state + o_vk, mask=m_vk, other=0.0)  # [BV, BK]
        b_dht = tl.load(dh + p_state + o_vk, mask=m_vk, other=0.0)  # [BV, BK]
        if USE_GV:  # column-wise decays of the inter-chunk terms
            b_gv = tl.load(gv + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
            b_gvl = tl.load(gv + ((bos + i_last) * H + i_h) * V + o_v, mask=m_v, other=0.0)  # [BV]
            b_dog = (b_do * tl.exp(b_gv)).to(b_do.dtype)
            b_vg = (b_v * tl.exp(tl.where(m_tv, b_gvl[None, :] - b_gv, 0.0))).to(b_v.dtype)
        else:
            b_dog, b_vg = b_do, b_v
        b_dq += tl.dot(b_dog, b_ht.to(b_do.dtype), input_precision=DOT_PRECISION)
        b_dk += tl.dot(b_vg, b_dht.to(b_v.dtype), input_precision=DOT_PRECISION)
        if STORE_DG:
            b_hdh += tl.sum(b_ht.to(tl.float32) * b_dht.to(tl.float32), axis=0)
        if STORE_DW:
            b_dv = tl.load(dv + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
            b_dw += tl.dot(b_dv, b_ht.to(b_dv.dtype), input_precision=DOT_PRECISION)
        if not USE_GK and not USE_DA:
            # transposes of loaded tiles (as the WY stage takes them), not of a dot result
            b_dA += tl.dot(b_do, tl.trans(b_v), input_precision=DOT_PRECISION)
            b_dAt += tl.dot(b_v, tl.trans(b_do), input_precision=DOT_PRECISION)

    # q, k of the head's group (grouped heads: HQK < H; dq, dk stay per head, the host sums each group)
    o_qk = ((bos + o_t[:, None]) * HQK + i_h // (H // HQK)) * K + o_k[None, :]  # [BT, BK]
    b_q = tl.load(q + o_qk, mask=m_tk, other=0.0)  # [BT, BK]
    b_k = tl.load(k + o_qk, mask=m_tk, other=0.0)  # [BT, BK]
    if USE_GK:
        b_gk = tl.load(gk + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
        b_gkl = tl.load(gk + ((bos + i_last) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
        if USE_GQ:  # the queries' own gate (RWKV6: the exclusive cumsum)
            b_gqk = tl.load(gq + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
        else:
            b_gqk = b_gk
        b_dq = b_dq * tl.exp(b_gqk) * scale + tl.load(dq_intra + o_tk, mask=m_tk, other=0.0)
        b_dk_inter = b_dk * tl.exp(tl.where(m_tk, b_gkl[None, :] - b_gk, 0.0))
        b_dk = b_dk_inter + tl.load(dk_intra + o_tk, mask=m_tk, other=0.0)
        if STORE_DG:
            b_dg = b_q * b_dq - b_k * b_dk  # [BT, BK]
            b_dgl = b_hdh * tl.exp(b_gkl) + tl.sum(b_k * b_dk_inter, axis=0)  # [BK]
            b_dg += tl.where((o_t == i_last)[:, None], b_dgl[None, :], 0.0)
            # a vector gate's block holds whole chunk rows: finish dg here (chunk-local reverse cumsum)
            b_dg = tl.cumsum(b_dg, axis=0, reverse=True)
            if USE_GQ:  # Gq_i = G_i - g_i: g_i also enters through the queries' exp(Gq_i) directly
                b_dg -= b_q * b_dq
            tl.store(dg + o_tk, b_dg.to(dg.dtype.element_ty), mask=m_tk)
    else:
        m_A = (o_i[:, None] >= o_i[None, :]) & m_t[:, None]  # [BT(i), BT(j)] causal
        m_At = (o_i[:, None] <= o_i[None, :]) & m_t[None, :]  # [BT(j), BT(i)] the same, transposed
        if USE_DA:  # given (value-side gates): dA [BT(i), BT(j)] and its transpose, loaded
            b_dA = tl.load(dA + ((bos + o_t[:, None]) * H + i_h) * BT + o_i[None, :], mask=m_t[:, None], other=0.0)
            b_dAt = tl.load(dA + ((bos + o_t[None, :]) * H + i_h) * BT + o_i[:, None], mask=m_t[None, :], other=0.0)
        if USE_G:
            b_g, b_gl = chunk_scalar_gates(g, g_gamma, bos, o_t, m_t, i_last, i_h, H, HAS_G)
            b_dA *= tl.exp(tl.where(m_A, b_g[:, None] - b_g[None, :], float("-inf")))
            b_dAt *= tl.exp(tl.where(m_At, b_g[None, :] - b_g[:, None], float("-inf")))
            b_dq *= tl.exp(b_g)[:, None]
            b_dk *= tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[:, None]
        b_dk_inter = b_dk
        # no tl.trans of a dot result here: that pattern miscompiles on Hopper with triton 3.4 - 3.7.0
        b_dA = tl.where(m_A, b_dA * scale, 0.0).to(b_k.dtype)
        b_dAt = tl.where(m_At, b_dAt * scale, 0.0).to(b_q.dtype)
        b_dq = b_dq * scale + tl.dot(b_dA, b_k, input_precision=DOT_PRECISION)
        b_dk = b_dk + tl.dot(b_dAt, b_q, input_precision=DOT_PRECISION)
        if STORE_DG:
            b_dg = tl.sum(b_q * b_dq - b_k * b_dk, axis=1)  # [BT]
            b_dgl = tl.sum(b_hdh, axis=0) * tl.exp(b_gl) + tl.sum(tl.sum(b_k * b_dk_inter, axis=1), axis=0)
            b_dg += tl.where(o_t == i_last, b_dgl, 0.0)
            # per-K-block partial sums [NK, B, T, H]; the host adds them up
            p_dg = dg + i_k * tl.num_programs(2).to(tl.int64) * T + (bos + o_t) * H + i_h
            tl.store(p_dg, b_dg, mask=m_t)
    tl.store(dq + o_tk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + o_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
    if STORE_DW:
        tl.store(dw + o_tk, -b_dw.to(dw.dtype.element_ty), mask=m_tk)


def chunk_bwd_dv(
    q: torch.Tensor,
    k: torch.Tensor,
    do: torch.Tensor,
    dh: torch.Tensor | None,
    layout: ChunkLayout,
    scale: float,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    A: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dv`` ``[B, T, H, V]`` (in ``do.dtype``).

    Args:
        q, k: ``[B, T, H, K]``; do: ``[B, T, H, V]``; dh: state gradients (:func:`chunk_bwd_dh`), or
            ``None`` for the intra-chunk part ``A^T do`` alone (the delta rule adds the state part itself).
        g / gk: chunk-local gate cumsums; A: precomputed scores (vector gates; ``q`` unused then).
        g_gamma: ``[H]`` constant log decay without ``g``, summed here (:func:`.chunk_h.chunk_fwd_h`).
    """
    B, T, HQK, K = k.shape
    H, V = do.shape[2], do.shape[-1]
    check_grouped_heads("k", HQK, H, gk, None)
    BK, BV = block_size(K), block_size(V)
    dv = empty(B, T, H, V, dtype=do.dtype, device=do.device)
    grid = (cdiv(V, BV), layout.row_chunks, B * H)
    chunk_dv_bwd_kernel[grid](
        q, k, g, g_gamma, gk, A, do, dh, dv, layout.cu_seqlens, layout.chunk_indices, scale, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, DOT_PRECISION=dot_precision(k.dtype), HQK=HQK,
    )  # fmt: skip
    return dv


def chunk_bwd_dqkg(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    do: torch.Tensor,
    dh: torch.Tensor,
    layout: ChunkLayout,
    scale: float,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    dq_intra: torch.Tensor | None = None,
    dk_intra: torch.Tensor | None = None,
    want_dg: bool = False,
    dg_dtype: torch.dtype = torch.float32,
    g_gamma: torch.Tensor | None = None,
    gq: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    dA: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``dq``, ``dk`` (input dtypes) and the gate gradient.

    Args:
        q, k: ``[B, T, H, K]``; v, do: ``[B, T, H, V]``; h, dh: states and state gradients.
        g: ``[B, T, H]`` or gk: ``[B, T, H, K]`` chunk-local gate cumsums (or neither).
        dq_intra, dk_intra: ``[B, T, H, K]`` float32 intra-chunk parts (vector gates only).
        want_dg: also return the gate gradient: for vector gates the finished ``dg [B, T, H, K]``
            (in ``dg_dtype``); for scalar gates ``dL/dG [B, T, H]`` float32, still to be
            reverse-cumsummed (:func:`fla.ops.common.cumsum.chunk_local_cumsum` with ``reverse``).
        g_gamma: ``[H]`` constant log decay without ``g`` (no gradient), as in :func:`.chunk_h.chunk_fwd_h`.
        gq: ``[B, T, H, K]`` the queries' own gate cumsum (with ``gk``; RWKV6: the exclusive cumsum
            ``G - g``): ``dq``'s state part is scaled by ``exp(gq)``, and ``dg`` includes ``gq``'s path.
        gv: ``[B, T, H, V]`` chunk-local cumsum of value-side log gates, with dA: ``[B, T, H, BT]`` float32
            its intra-chunk scores gradient (see the module docstring); no ``want_dg`` with them (the
            value-side gate's gradient is :func:`fla.ops.common.chunk_gv.chunk_gv_bwd_dvg`'s).
    """
    if gq is not None and gk is None:
        raise ValueError("gq (the queries' gate) needs the vector gate gk")
    if (gv is None) != (dA is None) or (gv is not None and (want_dg or g is not None or gk is not None)):
        raise ValueError("chunk_bwd_dqkg: gv needs dA (and neither g, gk nor want_dg), dA needs gv")
    dq, dk, _, dg = _launch_dqkg(
        q,
        k,
        v,
        h,
        do,
        dh,
        None,
        layout,
        scale,
        g,
        gk,
        dq_intra,
        dk_intra,
        want_dg,
        dg_dtype,
        g_gamma,
        gq=gq,
        gv=gv,
        dA=dA,
    )
    return dq, dk, dg


def chunk_bwd_dqkwg(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    do: torch.Tensor,
    dh: torch.Tensor,
    dv: torch.Tensor,
    layout: ChunkLayout,
    scale: float,
    g: torch.Tensor | None = None,
    want_dg: bool = False,
    gk: torch.Tensor | None = None,
    dq_intra: torch.Tensor | None = None,
    dk_intra: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`chunk_bwd_dqkg` plus ``dw = -dv h^T`` ``[B, T, H, K]`` (``k.dtype``): the gradient of ``w``
    when the chunk's values are ``v = u - w h`` (the delta rule's new values, ``dv`` their gradient
    ``[B, T, H, V]``).

    Args:
        g: ``[B, T, H]`` or gk: ``[B, T, H, K]`` (with its intra-chunk ``dq_intra, dk_intra`` float32)
            chunk-local gate cumsums, or neither.
    Returns:
        ``dq, dk, dw`` (input dtypes) and, when ``want_dg``, for a scalar gate ``dL/dG`` as per-K-block
        partial sums ``[NK, B, T, H]`` float32 (the consumer adds them up: the delta rule's WY backward does, in
        its kernel), for a vector gate the finished (reverse-cumsummed) ``dg`` ``[B, T, H, K]`` float32.
    """
    return _launch_dqkg(
        q, k, v, h, do, dh, dv, layout, scale, g, gk, dq_intra, dk_intra, want_dg, torch.float32, None, sum_dg=False
    )


def _launch_dqkg(
    q, k, v, h, do, dh, dv, layout: ChunkLayout, scale, g, gk, dq_intra, dk_intra, want_dg, dg_dtype, g_gamma,
    sum_dg=True, gq=None, gv=None, dA=None,
):  # fmt: skip
    if want_dg and g is None and gk is None:
        raise ValueError("want_dg needs the gates (g or gk)")
    B, T, HQK, K = q.shape
    H, V = v.shape[2], v.shape[-1]
    check_grouped_heads("q", HQK, H, gk, gv)
    if HQK != H and dv is not None:
        raise ValueError("grouped q / k heads: not with the delta rule's dw")
    BK, BV = block_size(K), block_size(V)
    NK = cdiv(K, BK)
    dq, dk = empty(B, T, H, K, dtype=q.dtype, device=q.device), empty(B, T, H, K, dtype=k.dtype, device=k.device)
    dw = None if dv is None else empty(B, T, H, K, dtype=k.dtype, device=q.device)
    dg = None
    if want_dg:
        if gk is not None:
            dg = empty(B, T, H, K, dtype=dg_dtype, device=q.device)
        else:  # per-K-block partial sums, added below
            dg = empty(NK, B, T, H, dtype=torch.float32, device=q.device)
    grid = (NK, layout.row_chunks, B * H)
    chunk_dqkg_bwd_kernel[grid](
        q, k, v, h, g, g_gamma, gk, gq, gv, dA, do, dh, dq_intra, dk_intra, dv, dq, dk, dw, dg, layout.cu_seqlens,
        layout.chunk_indices, scale, T, H=H, HQK=HQK, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV,
        DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    if dg is not None and gk is None and sum_dg:
        dg = dg[0] if NK == 1 else dg.sum(0)
    if HQK != H:  # grouped heads: each q / k head gets the sum over the value heads of its group
        dq, dk = (x.view(B, T, HQK, H // HQK, K).sum(3) for x in (dq, dk))
    return dq, dk, dw, dg
