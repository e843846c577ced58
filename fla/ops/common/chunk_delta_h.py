"""Inter-chunk state recurrence of the delta-rule family (Triton): the delta state recurrence.

One program per (sequence, head, V block) holds the state's ``[K, BV]`` columns in fp32 (the whole
key dim: ``w h`` reduces over it) and walks the chunks in order. Before chunk ``c`` it stores the
running state ``h[c]``, then with the WY stage's ``w, u`` (:mod:`fla.ops.common.wy`), ``G`` the chunk-local gate
cumsum and ``L`` the chunk's last row::

    v_new = u - w h                                  (the chunk's new values, stored)
    h     <- exp(G_L) h + (k * exp(G_L - G))^T v_new

The last running value is the final state. The backward kernel walks the chunks in reverse with
the state gradient (``dh`` after the chunk) and finishes the new values' gradient on the way::

    dv_new = dv_local + (k * exp(G_L - G)) dh
    dh    <- exp(G_L) dh + scale * (q * exp(G))^T do - w^T dv_new

The V block shrinks (to 32) when there are too few (sequence, head) programs to fill the GPU.
Gate kinds: none, a scalar per-head gate ``g [B, T, H]`` or a per-key-channel gate ``gk [B, T, H, K]``
(KDA), which scales the rows of ``h`` and of ``k`` by ``exp(G_L)`` / ``exp(G_L - G)`` per channel
(``USE_GK``, as in :func:`fla.ops.common.chunk_h.chunk_state_kernel`); the backward mirrors it, and
``q`` is scaled by ``exp(G)`` per channel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import sequence_bounds, state_block
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.ops.common.wy import check_delta_gate
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


def state_blocks(K: int, V: int, programs: int, device: torch.device) -> tuple[int, int]:
    """``(BK, BV)`` of a sequential state kernel: the whole key dim (``w h`` reduces over it) and a
    V block with ``BK * BV <= 8192`` fp32, halved (down to 32) while ``programs * cdiv(V, BV)``
    programs would leave streaming multiprocessors idle."""
    BK = max(16, next_power_of_2(K))
    BV = min(max(16, next_power_of_2(V)), max(16, 8192 // BK))
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    while BV > 32 and programs * cdiv(V, BV) < sms:
        BV //= 2
    return BK, BV


@lean_launch
@given_heuristics(USE_G="G", USE_GK="Gk", USE_H0="h0", STORE_HT="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["H", "K", "V", "BK", "BV", "USE_G", "USE_GK", "DOT_PRECISION"])
@triton.jit(do_not_specialize=["T"])
def chunk_delta_h_fwd_kernel(
    k,
    w,
    u,
    G,
    Gk,
    h0,
    h,
    v_new,
    ht,
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
    USE_G: tl.constexpr,
    USE_GK: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)

    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(0, NT):
        tl.store(h + ((boh + i_t) * H + i_h) * K * V + o_kv, b_h.to(h.dtype.element_ty), mask=m_kv)
        o_t = i_t * BT + tl.arange(0, BT)  # [BT]
        m_t = o_t < T_n
        o_row = (bos + o_t) * H + i_h  # [BT] token-head rows
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_w = tl.load(w + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0.0)  # [BT, BK]
        b_u = tl.load(u + o_row[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
        b_vn = b_u - tl.dot(b_w, b_h.to(b_w.dtype), input_precision=DOT_PRECISION)  # [BT, BV]
        tl.store(v_new + o_row[:, None] * V + o_v[None, :], b_vn.to(v_new.dtype.element_ty), mask=m_tv)
        m_kt = m_k[:, None] & m_t[None, :]
        b_kt = tl.load(k + o_row[None, :] * K + o_k[:, None], mask=m_kt, other=0.0)  # [BK, BT] k transposed
        if USE_G:
            i_last = tl.minimum(i_t * BT + BT, T_n) - 1
            b_g = tl.load(G + o_row, mask=m_t, other=0.0)  # [BT]
            b_gl = tl.load(G + (bos + i_last) * H + i_h)
            b_vn *= tl.exp(tl.where(m_t, b_gl - b_g, float("-inf")))[:, None]
            b_h *= tl.exp(b_gl)
        if USE_GK:  # the decay per key row: h <- exp(G_L)[:, None] h + (k exp(G_L - G))^T v_new
            i_last = tl.minimum(i_t * BT + BT, T_n) - 1
            b_gkt = tl.load(Gk + o_row[None, :] * K + o_k[:, None], mask=m_kt, other=0.0)  # [BK, BT]
            b_gkl = tl.load(Gk + ((bos + i_last) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
            b_kt = (b_kt * tl.exp(tl.where(m_kt, b_gkl[:, None] - b_gkt, float("-inf")))).to(b_kt.dtype)
            b_h *= tl.exp(b_gkl)[:, None]
        b_h += tl.dot(b_kt, b_vn.to(b_kt.dtype), input_precision=DOT_PRECISION)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def chunk_delta_fwd_h(
    k: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    output_final_state: bool = False,
    gk: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """States at chunk starts and the new values.

    Args:
        k, w: ``[B, T, H, K]``; u: ``[B, T, H, V]`` (from :func:`fla.ops.common.wy.chunk_delta_wy_fwd`);
        layout: the chunking; g: ``[B, T, H]`` chunk-local cumsum of scalar log gates (fp32) or ``None``;
        h0: ``[N, H, K, V]``; gk: ``[B, T, H, K]`` chunk-local cumsum of per-key-channel log gates (fp32,
        instead of ``g``) or ``None``.
    Returns:
        ``h`` ``[B, NT, H, K, V]`` (``[1, total chunks, H, K, V]`` for varlen, ``k.dtype``),
        ``v_new`` ``[B, T, H, V]`` (``u.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    check_delta_gate(g, k, gk)
    B, T, H, K = k.shape
    V = u.shape[-1]
    BK, BV = state_blocks(K, V, layout.num_seqs * H, k.device)
    h = empty(*layout.states_shape(H, K, V), dtype=k.dtype, device=k.device)
    v_new = empty(B, T, H, V, dtype=u.dtype, device=u.device)
    ht = empty(layout.num_seqs, H, K, V, dtype=torch.float32, device=k.device) if output_final_state else None
    grid = (cdiv(V, BV), layout.num_seqs * H)
    chunk_delta_h_fwd_kernel[grid](
        k, w, u, g, gk, h0, h, v_new, ht, layout.cu_seqlens, layout.chunk_offsets, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return h, v_new, ht


@lean_launch
@given_heuristics(USE_G="G", USE_GK="Gk", USE_DHT="dht", STORE_DH0="dh0", IS_VARLEN="cu_seqlens")
# one stage too: with float32 inputs and K > 128 (BK = 256) the [BT, BK] tiles of k, q and w need 336 KB of shared
# memory at two stages (H100: 227 KB), so every multi-stage config fails there (measured on an H100, 5b0182f)
@triton.autotune(
    configs=autotune_configs(stages=(1, 2, 3)), key=["H", "K", "V", "BK", "BV", "USE_G", "USE_GK", "DOT_PRECISION"]
)
@triton.jit(do_not_specialize=["T"])
def chunk_delta_dh_bwd_kernel(
    q,
    k,
    w,
    G,
    Gk,
    do,
    dv_local,
    dht,
    dh,
    dh0,
    dv_new,
    cu_seqlens,
    chunk_offsets,
    scale,
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
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)

    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim

    b_dh = tl.zeros([BK, BV], dtype=tl.float32)  # gradient of the state after the current chunk
    if USE_DHT:
        b_dh += tl.load(dht + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i in range(0, NT):
        i_t = NT - 1 - i
        tl.store(dh + ((boh + i_t) * H + i_h) * K * V + o_kv, b_dh.to(dh.dtype.element_ty), mask=m_kv)
        o_t = i_t * BT + tl.arange(0, BT)  # [BT]
        m_t = o_t < T_n
        o_row = (bos + o_t) * H + i_h  # [BT] token-head rows
        m_tk = m_t[:, None] & m_k[None, :]
        m_kt = m_k[:, None] & m_t[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        o_tv = o_row[:, None] * V + o_v[None, :]  # [BT, BV]
        b_k = tl.load(k + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0.0)  # [BT, BK]
        b_qt = tl.load(q + o_row[None, :] * K + o_k[:, None], mask=m_kt, other=0.0).to(tl.float32)  # [BK, BT]
        b_wt = tl.load(w + o_row[None, :] * K + o_k[:, None], mask=m_kt, other=0.0)  # [BK, BT] w transposed
        b_do = tl.load(do + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
        b_qt *= scale
        if USE_G:
            i_last = tl.minimum(i_t * BT + BT, T_n) - 1
            b_g = tl.load(G + o_row, mask=m_t, other=0.0)  # [BT]
            b_gl = tl.load(G + (bos + i_last) * H + i_h)
            b_k = (b_k * tl.exp(tl.where(m_t, b_gl - b_g, float("-inf")))[:, None]).to(k.dtype.element_ty)
            b_qt *= tl.exp(b_g)[None, :]
        if USE_GK:  # per channel: k exp(G_L - G), q exp(G), and the decay exp(G_L) per key row of dh
            i_last = tl.minimum(i_t * BT + BT, T_n) - 1
            b_gk = tl.load(Gk + o_row[:, None] * K + o_k[None, :], mask=m_tk, other=0.0)  # [BT, BK]
            b_gkt = tl.load(Gk + o_row[None, :] * K + o_k[:, None], mask=m_kt, other=0.0)  # [BK, BT]
            b_gkl = tl.load(Gk + ((bos + i_last) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
            b_k = (b_k * tl.exp(tl.where(m_tk, b_gkl[None, :] - b_gk, float("-inf")))).to(k.dtype.element_ty)
            b_qt *= tl.exp(b_gkt)
        # the new values feed the outputs (dv_local) and the state after the chunk
        b_dvn = tl.load(dv_local + o_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_dvn += tl.dot(b_k, b_dh.to(b_k.dtype), input_precision=DOT_PRECISION)  # [BT, BV]
        tl.store(dv_new + o_tv, b_dvn.to(dv_new.dtype.element_ty), mask=m_tv)
        if USE_G:
            b_dh *= tl.exp(b_gl)
        if USE_GK:
            b_dh *= tl.exp(b_gkl)[:, None]
        b_dh += tl.dot(b_qt.to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
        b_dh -= tl.dot(b_wt, b_dvn.to(b_wt.dtype), input_precision=DOT_PRECISION)
    if STORE_DH0:
        tl.store(dh0 + i_nh * K * V + o_kv, b_dh, mask=m_kv)


def chunk_delta_bwd_dh(
    q: torch.Tensor,
    k: torch.Tensor,
    w: torch.Tensor,
    do: torch.Tensor,
    dv_local: torch.Tensor,
    layout: ChunkLayout,
    scale: float,
    g: torch.Tensor | None = None,
    dht: torch.Tensor | None = None,
    want_dh0: bool = False,
    gk: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The reverse state recurrence of the chunked delta rule.

    With ``dh`` the gradient of the state after chunk ``c`` (``dht`` after the last one)::

        dv_new = dv_local + (k * exp(G_L - G)) dh
        dh    <- exp(G_L) dh + scale * (q * exp(G))^T do - w^T dv_new

    Args:
        q, k, w: ``[B, T, H, K]``; do: ``[B, T, H, V]``; dv_local: ``[B, T, H, V]`` the intra-chunk
            part of the new values' gradient (:func:`fla.ops.common.chunk_bwd.chunk_bwd_dv` without
            ``dh``); g: ``[B, T, H]`` fp32 chunk-local cumsum of scalar log gates or ``None``; dht: ``[N, H, K, V]``;
            gk: ``[B, T, H, K]`` fp32 chunk-local cumsum of per-key-channel log gates (instead of ``g``) or ``None``.
    Returns:
        ``dh`` shaped like the forward's ``h`` (``k.dtype``), ``dh0`` ``[N, H, K, V]`` float32 (or
        ``None`` unless ``want_dh0``) and ``dv_new`` ``[B, T, H, V]`` in ``do.dtype`` (what the dq/dk/dw
        and WY stages multiply it in: half the bytes of float32, and no tf32 products downstream).
    """
    check_delta_gate(g, k, gk)
    B, T, H, K = k.shape
    V = do.shape[-1]
    BK, BV = state_blocks(K, V, layout.num_seqs * H, k.device)
    dh = empty(*layout.states_shape(H, K, V), dtype=k.dtype, device=k.device)
    dh0 = empty(layout.num_seqs, H, K, V, dtype=torch.float32, device=k.device) if want_dh0 else None
    dv_new = empty(B, T, H, V, dtype=do.dtype, device=k.device)
    grid = (cdiv(V, BV), layout.num_seqs * H)
    chunk_delta_dh_bwd_kernel[grid](
        q, k, w, g, gk, do, dv_local, dht, dh, dh0, dv_new, layout.cu_seqlens, layout.chunk_offsets, scale, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return dh, dh0, dv_new
