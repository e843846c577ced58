"""WY stage of the chunked delta rule (Triton): the per-chunk triangular solve.

For every chunk of ``BT`` tokens (``G`` the chunk-local cumsum of the log gates, zero when ungated)::

    A_ij = beta_i exp(G_i - G_j) k_i.k_j   (j < i, else 0)
    Tm   = (I + A)^{-1}                     (unit lower triangular)
    w    = Tm (beta exp(G) k),   u = Tm (beta v)

``Tm`` is built in fp32 registers by forward substitution, row by row: with ``M = -A`` and
``R = Tm - I`` (strictly lower), ``R_i = M_i + sum_{j < i} M_ij R_j``. The math is in ``README.md``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import block_size, dot_precision, given_heuristics
from fla.utils import empty


@given_heuristics(USE_G="G", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def chunk_delta_wy_fwd_kernel(
    k,
    v,
    beta,
    G,
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
    LOAD_TM: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
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
    if LOAD_TM:  # the backward: Tm saved by the forward
        b_tm = tl.load(Tm + o_row[:, None] * BT + o_i[None, :], mask=m_t[:, None], other=0.0)  # [BT, BT]
    else:
        b_kk = tl.zeros([BT, BT], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)  # [BK]
            m_k = m_t[:, None] & (o_k < K)[None, :]
            b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_k, other=0.0).to(tl.float32)  # [BT, BK]
            b_kk += tl.dot(b_k, tl.trans(b_k), input_precision=DOT_PRECISION)
        m_strict = (o_i[:, None] > o_i[None, :]) & m_t[:, None]  # [BT, BT]; rows past the end: 0
        if USE_G:
            # only valid rows: G_i - G_j with a padded row i (G_i = 0) could overflow, and 0 * inf = NaN
            b_kk *= tl.exp(tl.where(m_strict, b_g[:, None] - b_g[None, :], float("-inf")))
        b_m = tl.where(m_strict, -b_beta[:, None] * b_kk, 0.0)  # [BT, BT] M = -A
        for i in range(1, BT):
            m_row = o_i == i
            b_a = tl.sum(tl.where(m_row[:, None], b_m, 0.0), axis=0)  # [BT] M_i
            b_a += tl.sum(b_a[:, None] * b_m, axis=0)  # rows j < i of b_m already hold R_j; M_ij = 0 for j >= i
            b_m = tl.where(m_row[:, None], b_a[None, :], b_m)
        b_tm = b_m + (o_i[:, None] == o_i[None, :]).to(tl.float32)  # [BT, BT]
        tl.store(Tm + o_row[:, None] * BT + o_i[None, :], b_tm, mask=m_t[:, None])

    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)  # [BK]
        m_k = m_t[:, None] & (o_k < K)[None, :]
        p_k = o_row[:, None] * K + o_k[None, :]  # [BT, BK]
        b_k = tl.load(k + p_k, mask=m_k, other=0.0).to(tl.float32) * b_scale[:, None]
        b_w = tl.dot(b_tm, b_k, input_precision=DOT_PRECISION)  # [BT, BK]
        tl.store(w + p_k, b_w.to(w.dtype.element_ty), mask=m_k)
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)  # [BV]
        m_v = m_t[:, None] & (o_v < V)[None, :]
        p_v = o_row[:, None] * V + o_v[None, :]  # [BT, BV]
        b_v = tl.load(v + p_v, mask=m_v, other=0.0).to(tl.float32) * b_beta[:, None]
        b_u = tl.dot(b_tm, b_v, input_precision=DOT_PRECISION)  # [BT, BV]
        tl.store(u + p_v, b_u.to(u.dtype.element_ty), mask=m_v)


def chunk_delta_wy_fwd(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    G: torch.Tensor | None,
    layout: ChunkLayout,
    Tm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The WY stage (contiguous inputs).

    Args:
        k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; G: ``[B, T, H]`` fp32
            chunk-local cumsum of the log gates (:func:`fla.ops.common.cumsum.chunk_local_cumsum`)
            or ``None``; layout: the chunking; Tm: a previous call's ``Tm`` (the backward recomputes
            ``w, u`` from it without the triangular solve) or ``None``.
    Returns:
        ``Tm`` ``[B, T, H, BT]`` fp32 (row ``i`` of its chunk's ``(I + A)^{-1}``), ``w``
        ``[B, T, H, K]`` (``k.dtype``) and ``u`` ``[B, T, H, V]`` (``v.dtype``).
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = layout.chunk_size
    load_tm = Tm is not None
    if not load_tm:
        Tm = empty(B, T, H, BT, dtype=torch.float32, device=k.device)
    w, u = empty(B, T, H, K, dtype=k.dtype, device=k.device), empty(B, T, H, V, dtype=v.dtype, device=v.device)
    grid = (layout.row_chunks, B * H)
    chunk_delta_wy_fwd_kernel[grid](
        k, v, beta, G, Tm, w, u, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, V=V, BT=BT, BK=block_size(K), BV=block_size(V), DOT_PRECISION=dot_precision(k.dtype),
        LOAD_TM=load_tm,
    )  # fmt: skip
    return Tm, w, u
