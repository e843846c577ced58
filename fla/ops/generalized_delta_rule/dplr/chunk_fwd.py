"""Triton forward of the chunked DPLR delta rule: one program per (sequence, head, V block) walks its chunks.

Per chunk of ``BT = 16`` tokens (maths in ``README.md``), with ``G`` / ``Gx`` the chunk-local inclusive /
exclusive cumsums of ``gk`` (``tl.cumsum`` in registers):

1. scores ``A_qk, A_qb`` (decay ``exp(G_i - G_j)``, ``j <= i``) and ``A_ak, A_ab`` (``exp(Gx_i - G_j)``,
   ``j < i``), summed over key-channel blocks of ``BKC`` as ``[BT, BT, BKC]`` products: every exponent is a
   difference of cumsums masked to the causal part first, so no factor exceeds 1 whatever the decay;
2. ``Tm = (I - A_ab)^{-1}`` by forward substitution over the rows (unit lower triangular);
3. ``u = Tm ((a * exp(Gx)) h + A_ak v)`` (the values ``a_i^T S_{i-1}`` the low-rank term reads),
   ``o = (q * exp(G)) h + A_qk v + A_qb u``, ``h <- exp(G_L) * h + (k * exp(G_L - G))^T v + (b * exp(G_L - G))^T u``.

Varlen needs no chunk indices: each program knows its sequence's bounds and walks its chunks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import sequence_bounds, state_block, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

DPLR_CHUNK = 16  # tokens per chunk of the Triton forward
DPLR_MAX_K = 256  # key head dim the kernels hold in one block


@triton.jit
def _pair_scores(x, y, Gr, Gc, m_pair):
    """``sum_c x_ic y_jc exp(Gr_ic - Gc_jc)`` ``[BT, BT]`` on the pairs ``m_pair`` (0 elsewhere)."""
    diff = Gr[:, None, :] - Gc[None, :, :]  # [BT, BT, BKC]
    decay = tl.exp(tl.where(m_pair[:, :, None], diff, float("-inf")))
    return tl.sum(x[:, None, :] * y[None, :, :] * decay, axis=2)


@lean_launch
@given_heuristics(USE_H0="h0", STORE_HT="ht", STORE_HS="hs", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def dplr_chunk_fwd_kernel(
    q,
    k,
    v,
    a,
    b,
    gk,
    h0,
    o,
    ht,
    hs,
    cu_seqlens,
    chunk_offsets,
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
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    STORE_HS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT_n, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim
    o_t = tl.arange(0, BT)
    m_incl = o_t[:, None] >= o_t[None, :]  # [BT, BT] j <= i
    m_strict = o_t[:, None] > o_t[None, :]  # [BT, BT] j < i
    eye = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)  # [BT, BT]

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_c in range(0, NT_n):
        if STORE_HS:  # the state before each chunk, for the backward: [.., chunk, H, K, V]
            tl.store(hs + ((boh + i_c) * H + i_h) * K * V + o_kv, b_h, mask=m_kv)
        m_t = i_c * BT + o_t < T_n  # [BT]
        rows = (bos + i_c * BT + o_t) * H + i_h  # [BT] token-head rows
        # 1. scores, one block of key channels at a time
        A_qk = tl.zeros([BT, BT], dtype=tl.float32)
        A_qb = tl.zeros([BT, BT], dtype=tl.float32)
        A_ak = tl.zeros([BT, BT], dtype=tl.float32)
        A_ab = tl.zeros([BT, BT], dtype=tl.float32)
        for i_kc in range(0, tl.cdiv(K, BKC)):
            o_kc = i_kc * BKC + tl.arange(0, BKC)  # [BKC]
            p_c = rows[:, None] * K + o_kc[None, :]  # [BT, BKC]
            m_c = m_t[:, None] & (o_kc < K)[None, :]
            c_q = tl.load(q + p_c, mask=m_c, other=0.0).to(tl.float32) * scale
            c_k = tl.load(k + p_c, mask=m_c, other=0.0).to(tl.float32)
            c_a = tl.load(a + p_c, mask=m_c, other=0.0).to(tl.float32)
            c_b = tl.load(b + p_c, mask=m_c, other=0.0).to(tl.float32)
            c_g = tl.load(gk + p_c, mask=m_c, other=0.0).to(tl.float32)
            c_G = tl.cumsum(c_g, axis=0)  # [BT, BKC] inclusive
            c_Gx = c_G - c_g  # exclusive
            A_qk += _pair_scores(c_q, c_k, c_G, c_G, m_incl)
            A_qb += _pair_scores(c_q, c_b, c_G, c_G, m_incl)
            A_ak += _pair_scores(c_a, c_k, c_Gx, c_G, m_strict)
            A_ab += _pair_scores(c_a, c_b, c_Gx, c_G, m_strict)
        # 2. Tm = (I - A_ab)^{-1}: row i = e_i + sum_{j < i} A_ab[i, j] Tm_j (rows j < i are final)
        b_T = eye
        for i in range(1, BT):
            a_row = tl.sum(tl.where(o_t[:, None] == i, A_ab, 0.0), axis=0)  # [BT] over j
            b_T += tl.where(o_t[:, None] == i, tl.sum(a_row[:, None] * b_T, axis=0)[None, :], 0.0)
        # 3. the chunk against the carried state h [BK, BV]
        p_x = rows[:, None] * K + o_k[None, :]  # [BT, BK]
        m_x = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + p_x, mask=m_x, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + p_x, mask=m_x, other=0.0).to(tl.float32)
        b_a = tl.load(a + p_x, mask=m_x, other=0.0).to(tl.float32)
        b_b = tl.load(b + p_x, mask=m_x, other=0.0).to(tl.float32)
        b_g = tl.load(gk + p_x, mask=m_x, other=0.0).to(tl.float32)
        p_y = rows[:, None] * V + o_v[None, :]  # [BT, BV]
        m_y = m_t[:, None] & m_v[None, :]
        b_v = tl.load(v + p_y, mask=m_y, other=0.0).to(tl.float32)
        b_G = tl.cumsum(b_g, axis=0)  # [BT, BK]
        b_GL = tl.sum(tl.where(o_t[:, None] == BT - 1, b_G, 0.0), axis=0)  # [BK] (rows past the end add 0)
        b_rhs = tl.dot(b_a * tl.exp(b_G - b_g), b_h, input_precision=DOT_PRECISION)
        b_rhs += tl.dot(A_ak, b_v, input_precision=DOT_PRECISION)  # [BT, BV]
        b_u = tl.dot(b_T, b_rhs, input_precision=DOT_PRECISION)  # [BT, BV]
        b_o = tl.dot(b_q * tl.exp(b_G), b_h, input_precision=DOT_PRECISION)
        b_o += tl.dot(A_qk, b_v, input_precision=DOT_PRECISION)
        b_o += tl.dot(A_qb, b_u, input_precision=DOT_PRECISION)
        tl.store(o + p_y, b_o.to(o.dtype.element_ty), mask=m_y)
        b_decay = tl.exp(b_GL[None, :] - b_G)  # [BT, BK] <= 1
        b_h *= tl.exp(b_GL)[:, None]
        b_h += tl.dot(tl.trans(b_k * b_decay), b_v, input_precision=DOT_PRECISION)
        b_h += tl.dot(tl.trans(b_b * b_decay), b_u, input_precision=DOT_PRECISION)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def chunk_dplr_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    layout: ChunkLayout | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launch :func:`dplr_chunk_fwd_kernel` on contiguous inputs.

    Args:
        q, k, a, b, gk: ``[B, T, H, K]`` (``K <= 256``); v: ``[B, T, H, V]``; initial_state: ``[N, H, K, V]``;
        cu_seqlens: ``[N+1]`` (``B == 1``).
        layout: the chunk layout (chunks of :data:`DPLR_CHUNK`) when the per-chunk states are wanted.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``), the final state ``[N, H, K, V]`` float32 or ``None``, and with
        ``layout`` the state before every chunk (``layout.states_shape``, float32), else ``None``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = max(16, next_power_of_2(K))
    BV = min(max(16, next_power_of_2(V)), max(16, 4096 // BK))  # keep the fp32 state block <= 4096
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    hs = None if layout is None else empty(*layout.states_shape(H, K, V), dtype=torch.float32, device=v.device)
    offsets = None if layout is None else layout.chunk_offsets
    if cu_seqlens is not None and offsets is None:
        offsets = ChunkLayout.build(q, cu_seqlens, DPLR_CHUNK).chunk_offsets
    grid = (cdiv(V, BV), N * H)
    dplr_chunk_fwd_kernel[grid](
        q, k, v, a, b, gk, initial_state, o, ht, hs, cu_seqlens, offsets, scale, T, H=H, K=K, V=V,
        BT=DPLR_CHUNK, BK=BK, BKC=16, BV=BV, DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return o, ht, hs


@lean_launch
@given_heuristics(USE_H0="h0", STORE_HT="ht", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def dplr_fused_recurrent_fwd_kernel(
    q,
    k,
    v,
    a,
    b,
    gk,
    h0,
    o,
    ht,
    cu_seqlens,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Token by token: ``S <- exp(gk_t)[:, None] * S + b_t (a_t^T S) + k_t v_t^T``, ``o_t = scale * S^T q_t``."""
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for t in range(0, T_n):
        i_tok = (bos + t) * H + i_h  # token-head row
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_a = tl.load(a + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_b = tl.load(b + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_g = tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_erased = tl.sum(b_a[:, None] * b_h, axis=0)  # [BV] a_t^T S_{t-1}
        b_h = tl.exp(b_g)[:, None] * b_h + b_b[:, None] * b_erased[None, :] + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0)  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def fused_recurrent_dplr_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch :func:`dplr_fused_recurrent_fwd_kernel`; same arguments and returns as :func:`chunk_dplr_fwd`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = max(16, next_power_of_2(K))
    BV = min(max(16, next_power_of_2(V)), max(16, 4096 // BK))
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    grid = (cdiv(V, BV), N * H)
    dplr_fused_recurrent_fwd_kernel[grid](
        q, k, v, a, b, gk, initial_state, o, ht, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK, BV=BV
    )
    return o, ht


__all__ = ["DPLR_CHUNK", "DPLR_MAX_K", "chunk_dplr_fwd", "fused_recurrent_dplr_fwd"]
