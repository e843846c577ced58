"""Triton kernels of the element-wise gated scan ``h_t = exp(g_t) * h_{t-1} + x_t`` (HGRN), forward and backward.

Chunked scan (the training path), two launches per direction:

1. :func:`hgrn_chunk_local_fwd_kernel`, one program per ``(feature block, chunk)``: the scan of each chunk
   from a zero state (``tl.associative_scan`` over the ``[BT, BD]`` tile), float32, into a scratch buffer.
2. :func:`hgrn_chunk_carry_fwd_kernel`, one program per ``(feature block, sequence)``: walks the chunks of
   its sequence in order, ``h = h_local + exp(G) * h_carry`` (``G`` the inclusive chunk-local cumsum of the
   log gates), and writes the output; the last row is the next chunk's carry.

The backward is the same scan run in reverse with the gates shifted by one token,
``dh_t = exp(g_{t+1}) * dh_{t+1} + do_t`` (``g_T := 0`` carries ``dht``), so both kernels take
``REVERSE``: the tile's rows are then read in reverse token order and the gate of row ``t`` is
``g_{t+1}``. In reverse, the carry kernel also writes ``dx = dh`` and ``dg_t = dh_t * exp(g_t) * h_{t-1}``
(``h_{-1}`` = the initial state) and ``dh0 = exp(g_0) * dh_0``.

Rows past a sequence's end read ``x = 0, g = 0`` and are never stored; the carry is read at the row of
the chunk's last token (in scan order).

The fused recurrent kernels (the decoding path) walk the tokens one at a time with a ``[BD]`` state.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, given_heuristics
from fla.utils import empty, empty_like
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

CHUNK_SIZE = 64


def _block_d(D: int, cap: int) -> int:
    return min(cap, max(16, next_power_of_2(D)))


@triton.jit
def _gated_sum(g1, h1, g2, h2):
    """Combine two scan segments (earlier 1, later 2): decays add, the earlier state decays into the later."""
    return g1 + g2, tl.exp(g2) * h1 + h2


@triton.jit
def _tile_rows(i_tc, BT: tl.constexpr, REVERSE: tl.constexpr):
    """Token positions (inside the sequence) of a chunk's tile rows, in scan order: ``[BT]``."""
    o_i = tl.arange(0, BT)
    if REVERSE:
        return i_tc * BT + (BT - 1 - o_i)
    return i_tc * BT + o_i


@triton.jit
def _load_gates(g, bos, o_p, m_d, o_d, T_n, D: tl.constexpr, REVERSE: tl.constexpr):
    """Float32 ``[BT, BD]`` gates of the tile rows ``o_p``: ``g_t`` (forward) or ``g_{t+1}`` (reverse);
    0 past the sequence's end."""
    if REVERSE:
        o_q = o_p + 1
    else:
        o_q = o_p
    m_g = (o_q < T_n)[:, None] & m_d[None, :]
    return tl.load(g + (bos + o_q[:, None]) * D + o_d[None, :], mask=m_g, other=0.0).to(tl.float32)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD"])
@triton.jit(do_not_specialize=["T"])
def hgrn_chunk_local_fwd_kernel(
    x,
    g,
    h_local,
    cu_seqlens,
    chunk_indices,
    T,
    D: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    REVERSE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    o_p = _tile_rows(i_tc, BT, REVERSE)  # [BT]
    m_x = (o_p < T_n)[:, None] & m_d[None, :]  # [BT, BD]
    o_x = (bos + o_p[:, None]) * D + o_d[None, :]  # [BT, BD]
    b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BT, BD]
    b_g = _load_gates(g, bos, o_p, m_d, o_d, T_n, D, REVERSE)  # [BT, BD]
    _, b_h = tl.associative_scan((b_g, b_x), axis=0, combine_fn=_gated_sum)  # [BT, BD]
    tl.store(h_local + o_x, b_h, mask=m_x)


@lean_launch
@given_heuristics(USE_INITIAL="h_init", STORE_FINAL="h_last", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD"])
@triton.jit(do_not_specialize=["T"])
def hgrn_chunk_carry_fwd_kernel(
    g,
    h_local,
    out,
    h_init,
    h_last,
    o_fwd,
    h0_fwd,
    dg,
    cu_seqlens,
    T,
    D: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    REVERSE: tl.constexpr,
    USE_H0_FWD: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    NT = tl.cdiv(T_n, BT)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    b_h = tl.zeros([BD], dtype=tl.float32)  # the carry
    if USE_INITIAL:
        b_h += tl.load(h_init + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for i_c in range(0, NT):
        if REVERSE:
            i_tc = NT - 1 - i_c
        else:
            i_tc = i_c
        o_p = _tile_rows(i_tc, BT, REVERSE)  # [BT]
        m_t = o_p < T_n
        m_x = m_t[:, None] & m_d[None, :]  # [BT, BD]
        o_x = (bos + o_p[:, None]) * D + o_d[None, :]  # [BT, BD]
        b_G = tl.cumsum(_load_gates(g, bos, o_p, m_d, o_d, T_n, D, REVERSE), axis=0)  # [BT, BD]
        b_o = tl.load(h_local + o_x, mask=m_x, other=0.0) + tl.exp(b_G) * b_h[None, :]  # [BT, BD]
        tl.store(out + o_x, b_o.to(out.dtype.element_ty), mask=m_x)
        if REVERSE:
            # dg_t = dh_t * exp(g_t) * h_{t-1}, h_{-1} = the forward's initial state
            b_gt = tl.load(g + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BT, BD]
            m_prev = m_x & (o_p > 0)[:, None]
            b_hp = tl.load(o_fwd + o_x - D, mask=m_prev, other=0.0).to(tl.float32)  # [BT, BD]
            if USE_H0_FWD:
                b_h0 = tl.load(h0_fwd + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
                b_hp += tl.where((o_p == 0)[:, None], b_h0[None, :], 0.0)
            tl.store(dg + o_x, (b_o * tl.exp(b_gt) * b_hp).to(dg.dtype.element_ty), mask=m_x)
        # the next carry: the row of the chunk's last token in scan order (its first token in reverse)
        if REVERSE:
            p_last = i_tc * BT
        else:
            p_last = tl.minimum(i_tc * BT + BT, T_n) - 1
        b_h = tl.sum(tl.where((o_p == p_last)[:, None], b_o, 0.0), axis=0)  # [BD]
    if STORE_FINAL:
        if REVERSE:
            # dh0 = exp(g_0) * dh_0 (a sequence without tokens passes dht through)
            b_g0 = tl.load(g + bos * D + o_d, mask=m_d & (o_d * 0 + T_n > 0), other=0.0).to(tl.float32)
            b_h = b_h * tl.exp(b_g0)
        tl.store(h_last + i_n * D + o_d, b_h.to(h_last.dtype.element_ty), mask=m_d)


@lean_launch
@given_heuristics(USE_INITIAL="h0", STORE_FINAL="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD"])
@triton.jit(do_not_specialize=["T"])
def hgrn_fused_recurrent_fwd_kernel(
    x,
    g,
    o,
    h0,
    ht,
    cu_seqlens,
    T,
    D: tl.constexpr,
    BD: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    b_h = tl.zeros([BD], dtype=tl.float32)  # [BD]
    if USE_INITIAL:
        b_h += tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for t in range(0, T_n):
        o_x = (bos + t) * D + o_d  # [BD]
        b_x = tl.load(x + o_x, mask=m_d, other=0.0).to(tl.float32)
        b_g = tl.load(g + o_x, mask=m_d, other=0.0).to(tl.float32)
        b_h = tl.exp(b_g) * b_h + b_x
        tl.store(o + o_x, b_h.to(o.dtype.element_ty), mask=m_d)
    if STORE_FINAL:
        tl.store(ht + i_n * D + o_d, b_h.to(ht.dtype.element_ty), mask=m_d)


@lean_launch
@given_heuristics(USE_INITIAL="h0", USE_FINAL_GRAD="dht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD"])
@triton.jit(do_not_specialize=["T"])
def hgrn_fused_recurrent_bwd_kernel(
    g,
    o,
    h0,
    do,
    dht,
    dx,
    dg,
    dh0,
    cu_seqlens,
    T,
    D: tl.constexpr,
    BD: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    USE_FINAL_GRAD: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    b_dh = tl.zeros([BD], dtype=tl.float32)  # [BD]
    if USE_FINAL_GRAD:
        b_dh += tl.load(dht + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_h0 = tl.zeros([BD], dtype=tl.float32)  # [BD]
    if USE_INITIAL:
        b_h0 += tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for i in range(0, T_n):
        t = T_n - 1 - i
        o_x = (bos + t) * D + o_d  # [BD]
        b_dh += tl.load(do + o_x, mask=m_d, other=0.0).to(tl.float32)
        b_g = tl.exp(tl.load(g + o_x, mask=m_d, other=0.0).to(tl.float32))
        b_hp = tl.load(o + o_x - D, mask=m_d & (o_d * 0 + t > 0), other=0.0).to(tl.float32)
        b_hp = tl.where(t > 0, b_hp, b_h0)
        tl.store(dx + o_x, b_dh.to(dx.dtype.element_ty), mask=m_d)
        tl.store(dg + o_x, (b_dh * b_g * b_hp).to(dg.dtype.element_ty), mask=m_d)
        b_dh = b_dh * b_g
    if USE_INITIAL:
        tl.store(dh0 + i_n * D + o_d, b_dh.to(dh0.dtype.element_ty), mask=m_d)


# ----------------------------------------------------------------------------------------------- host side


def chunk_hgrn_scan(
    x: torch.Tensor,
    g: torch.Tensor,
    h_init: torch.Tensor | None,
    want_final: bool,
    layout: ChunkLayout,
    *,
    reverse: bool = False,
    out_dtype: torch.dtype | None = None,
    o_fwd: torch.Tensor | None = None,
    h0_fwd: torch.Tensor | None = None,
    dg_dtype: torch.dtype | None = None,
    final_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One direction of the chunked scan.

    Forward (``reverse=False``): ``x`` the inputs, ``h_init`` the initial state; returns ``(o, ht, None)``.
    Backward (``reverse=True``): ``x`` = ``do``, ``h_init`` = ``dht``, ``o_fwd`` / ``h0_fwd`` the forward's
    output and initial state; returns ``(dx, dh0, dg)``.
    """
    B, T, D = x.shape
    BT, N = layout.chunk_size, layout.num_seqs
    h_local = empty(B, T, D, dtype=torch.float32, device=x.device)
    BD = _block_d(D, 64)
    hgrn_chunk_local_fwd_kernel[(cdiv(D, BD), layout.row_chunks, B)](
        x, g, h_local, layout.cu_seqlens, layout.chunk_indices, T, D=D, BT=BT, BD=BD, REVERSE=reverse,
    )  # fmt: skip
    out = empty(B, T, D, dtype=out_dtype or x.dtype, device=x.device)
    h_last = empty(N, D, dtype=final_dtype, device=x.device) if want_final else None
    dg = empty(B, T, D, dtype=dg_dtype or g.dtype, device=x.device) if reverse else None
    BD = _block_d(D, 32)
    hgrn_chunk_carry_fwd_kernel[(cdiv(D, BD), N)](
        g, h_local, out, h_init, h_last, o_fwd, h0_fwd, dg, layout.cu_seqlens, T,
        D=D, BT=BT, BD=BD, REVERSE=reverse, USE_H0_FWD=h0_fwd is not None,
    )  # fmt: skip
    return out, h_last, dg


def fused_recurrent_hgrn_fwd(x, g, h0, output_final_state, cu_seqlens):
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    o = empty_like(x)
    ht = empty(N, D, dtype=torch.float32, device=x.device) if output_final_state else None
    BD = _block_d(D, 64)
    hgrn_fused_recurrent_fwd_kernel[(cdiv(D, BD), N)](x, g, o, h0, ht, cu_seqlens, T, D=D, BD=BD)
    return o, ht


def fused_recurrent_hgrn_bwd(g, o, h0, do, dht, cu_seqlens, x_dtype):
    B, T, D = g.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    dx = empty(B, T, D, dtype=x_dtype, device=g.device)
    dg = empty_like(g)
    dh0 = empty_like(h0) if h0 is not None else None
    BD = _block_d(D, 64)
    hgrn_fused_recurrent_bwd_kernel[(cdiv(D, BD), N)](g, o, h0, do, dht, dx, dg, dh0, cu_seqlens, T, D=D, BD=BD)
    return dx, dg, dh0
