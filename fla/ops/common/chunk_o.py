"""Intra-chunk output stage: ``o = scale * (q * exp(G)) h + causal(A) v`` per chunk.

For scalar gates (or none) the intra-chunk scores are formed here:
``A_ij = scale * (q_i . k_j) * exp(G_i - G_j)`` for ``i >= j`` (``G`` = chunk-local cumsum of
the log gates, so every exponent is <= 0; given, or summed here for a constant decay alone). Vector
gates pass ``A`` precomputed (see :mod:`fla.ops.common.chunk_intra_gk`) and ``gk`` for the
inter-chunk term. A value-side gate ``gv [B, T, H, V]`` (chunk-local cumsum) scales the inter-chunk term
column-wise, ``scale * (q h) * exp(G)``; its intra-chunk term ``sum_j A_ij v_j exp(G_i - G_j)`` is not a
product with ``A`` and comes in precomputed as ``o_intra`` (:mod:`fla.ops.common.chunk_gv`).
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
@given_heuristics(**SCALAR_GATE_FLAGS, USE_GK="gk", USE_GV="gv", USE_A="A", USE_OI="o_intra", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=autotune_configs(),
    key=["H", "HQK", "K", "V", "BK", "BV", "USE_G", "USE_GK", "USE_GV", "USE_A", "USE_OI", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def chunk_output_fwd_kernel(
    q,
    k,
    v,
    h,
    g,
    g_gamma,
    gk,
    gv,
    A,
    o_intra,
    o,
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
    USE_GV: tl.constexpr,
    USE_A: tl.constexpr,
    USE_OI: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    i_hk = i_h // (H // HQK)  # the q / k head (grouped heads: HQK < H)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_i = tl.arange(0, BT)  # [BT] rows inside the chunk
    o_t = i_tc * BT + o_i  # [BT] positions inside the sequence
    m_t = o_t < T_n
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]

    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)  # [BK]
        m_k = o_k < K
        o_tk = ((bos + o_t[:, None]) * HQK + i_hk) * K + o_k[None, :]  # [BT, BK] (gk: HQK = H)
        m_tk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
        p_h = h + (i_ch * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]
        b_h = tl.load(p_h, mask=m_k[:, None] & m_v[None, :], other=0.0)  # [BK, BV]
        if USE_GK:
            b_gk = tl.load(gk + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
            b_qg = (b_q * tl.exp(b_gk)).to(b_q.dtype)
        else:
            b_qg = b_q
        b_o += tl.dot(b_qg, b_h.to(b_q.dtype), input_precision=DOT_PRECISION)
        if not USE_A and not USE_OI:
            o_kt = ((bos + o_t[None, :]) * HQK + i_hk) * K + o_k[:, None]  # [BK, BT]: k transposed
            b_kt = tl.load(k + o_kt, mask=m_k[:, None] & m_t[None, :], other=0.0)
            b_A += tl.dot(b_q, b_kt, input_precision=DOT_PRECISION)

    m_A = (o_i[:, None] >= o_i[None, :]) & m_t[:, None]  # [BT, BT] causal
    if USE_G:
        i_last = tl.minimum(i_tc * BT + BT, T_n) - 1
        b_g, _ = chunk_scalar_gates(g, g_gamma, bos, o_t, m_t, i_last, i_h, H, HAS_G)  # [BT]
        b_o *= tl.exp(b_g)[:, None]
        b_A *= tl.exp(tl.where(m_A, b_g[:, None] - b_g[None, :], float("-inf")))
    o_tv = ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :]  # [BT, BV]
    if USE_GV:
        b_o *= tl.exp(tl.load(gv + o_tv, mask=m_tv, other=0.0))
    if USE_OI:
        b_o = b_o * scale + tl.load(o_intra + o_tv, mask=m_tv, other=0.0).to(tl.float32)
    else:
        if USE_A:
            p_A = A + ((bos + o_t[:, None]) * H + i_h) * BT + o_i[None, :]
            b_A = tl.load(p_A, mask=m_t[:, None], other=0.0)
        else:
            b_A = tl.where(m_A, b_A * scale, 0.0)
        b_v = tl.load(v + o_tv, mask=m_tv, other=0.0)
        b_o = b_o * scale + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)
    tl.store(o + o_tv, b_o.to(o.dtype.element_ty), mask=m_tv)


def chunk_fwd_o(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    layout: ChunkLayout,
    scale: float,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    A: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    o_intra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Outputs of every chunk.

    Args:
        q, k: ``[B, T, H, K]`` (or ``[B, T, HK, K]``, grouped heads: see :func:`.chunk_h.chunk_fwd_h`); v:
            ``[B, T, H, V]``; h: states at chunk starts (:func:`chunk_fwd_h`).
        g: ``[B, T, H]`` or gk: ``[B, T, H, K]`` chunk-local gate cumsums (float32), or neither.
        A: ``[B, T, H, BT]`` precomputed scaled causal scores (vector gates; any float dtype, rounded to
            ``v.dtype`` for the product); ``k`` unused then.
        g_gamma: ``[H]`` constant log decay without ``g``, summed here, as in :func:`.chunk_h.chunk_fwd_h`.
        gv: ``[B, T, H, V]`` chunk-local cumsum of value-side log gates (scales the inter-chunk term).
        o_intra: ``[B, T, H, V]`` the intra-chunk term, given (``A`` and ``v`` unused then).
    Returns:
        ``o`` ``[B, T, H, V]`` in ``v.dtype``.
    """
    B, T, HQK, K = q.shape
    H, V = v.shape[2], v.shape[-1]
    check_grouped_heads("q", HQK, H, gk, gv)
    BK, BV = block_size(K), block_size(V)
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    grid = (cdiv(V, BV), layout.row_chunks, B * H)
    chunk_output_fwd_kernel[grid](
        q, k, v, h, g, g_gamma, gk, gv, A, o_intra, o, layout.cu_seqlens, layout.chunk_indices, scale, T,
        H=H, HQK=HQK, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return o
