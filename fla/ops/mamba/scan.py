"""Triton kernels of the selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t . h_t``.

Every ``(channel d, state n)`` pair is an independent scalar recurrence with the log decay
``g_t[d, n] = dt_t[d] A[d, n]`` and the input ``u_t[d, n] = dt_t[d] x_t[d] B_t[n]``. A program holds a
chunk's ``[BT, BD, BS]`` tile (``BT`` tokens, ``BD`` channels, all ``BS >= d_state`` states) and scans it
with ``tl.associative_scan`` over (decay factor, state) pairs, ``a_t = exp(dt_t A)``:
``(a1, h1) . (a2, h2) = (a1 a2, a2 h1 + h2)``, in float32. One ``exp`` per element and tile: the combine runs
several times per element inside the scan (per thread, across lanes, across warps), and an ``exp`` in it made the
scan bound by the special-function units; the scanned factor products are the chunk-local decays
``exp(A G_t)`` that the carry needs (products of factors <= 1 underflow to 0 as ``exp`` of the sums would). Only
the per-chunk states ``[chunks, Di, Ds]`` reach memory.

Forward, three launches:

1. :func:`mamba_chunk_state_kernel` (per chunk): the chunk's scan from a zero state; stores its last row
   (the chunk's own contribution to the state) and ``sum dt`` over the chunk (its decay is ``exp(A sum dt)``).
2. :func:`mamba_chunk_carry_kernel` (per sequence, serial over its chunks): the state entering each chunk,
   ``h_in[c+1] = exp(A sum dt_c) h_in[c] + local_c``, and the final state.
3. :func:`mamba_chunk_output_fwd_kernel` (per chunk): the scan again plus the carry,
   ``h_t = local_t + exp(A G_t) h_in`` (``G_t`` the chunk-local cumsum of dt), and ``y_t = sum_n C_t h_t``.

Backward (``dy`` the gradient of ``y``): ``dh_t = C_t dy_t + exp(dt_{t+1} A) dh_{t+1}`` (``dh_{T} :=`` the final
state's gradient) is the same scan run backwards in time with the decays shifted by one token, so it reuses
the state and carry kernels (``REVERSE``); :func:`mamba_chunk_bwd_kernel` then recomputes ``h_{t-1}`` (a scan of
the inputs shifted by one token, plus the carry) and ``dh_t`` (the reverse scan plus its carry) per chunk and
writes ``dx, ddt`` and per-program partial sums of ``dA`` (over tokens) and ``dB, dC`` (over channels), which
the host adds up.

The fused recurrent kernel (decoding) walks the tokens one at a time with a ``[BD, BS]`` state.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds, sequence_bounds, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

CHUNK_SIZE = 32
TILE = 4096  # BT * BD * BS elements per [BT, BD, BS] tile (several live per program)


def state_block(Ds: int) -> int:
    """``BS``: all ``d_state`` states in one block (a power of two, at least 4)."""
    return max(4, next_power_of_2(Ds))


def channel_block(Di: int, BS: int, BT: int = CHUNK_SIZE, tile: int = TILE) -> int:
    """``BD``: channels per program so that a ``[BT, BD, BS]`` tile stays within ``tile`` elements."""
    return max(1, min(next_power_of_2(Di), tile // (BT * BS), 32))


@triton.jit
def _decayed_sum(a1, h1, a2, h2):
    """Combine two scan segments (earlier 1, later 2): decay factors multiply, the earlier state decays into the
    later."""
    return a1 * a2, a2 * h1 + h2


@triton.jit
def _load_tokens(p, bos, o_p, m_p, o_c, m_c, W: tl.constexpr):
    """Float32 ``[BT, BC]`` rows ``o_p`` (positions in the sequence starting at token ``bos``) of a ``[.., W]``
    token-major tensor, columns ``o_c``; 0 where ``m_p`` / ``m_c`` are false."""
    return tl.load(p + (bos + o_p[:, None]) * W + o_c[None, :], mask=m_p[:, None] & m_c[None, :], other=0.0).to(
        tl.float32
    )


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_state_kernel(
    x,
    dt,
    A,
    Bm,
    local,
    dt_sum,
    cu_seqlens,
    chunk_indices,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BS: tl.constexpr,
    REVERSE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk: the last row of its scan from a zero state -> ``local [NC, Di, Ds]``, and ``dt_sum [NC, Di]``.

    Forward: ``x`` the inputs, ``Bm`` = B, decays of token ``t`` are ``dt_t A``, inputs ``dt_t x_t B_t``.
    Reverse: ``x`` = dy, ``Bm`` = C, rows in reverse token order, decays ``dt_{t+1} A`` (0 past the sequence's
    end), inputs ``dy_t C_t``; the last row is then the chunk's first token.
    """
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_s = tl.arange(0, BS)  # [BS]
    m_s = o_s < Ds
    o_i = tl.arange(0, BT)
    if REVERSE:
        o_p = i_tc * BT + (BT - 1 - o_i)  # [BT] token positions in scan order
        o_g = o_p + 1  # the decay of row t is dt_{t+1}
    else:
        o_p = i_tc * BT + o_i
        o_g = o_p
    m_p = o_p < T_n
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    b_dt = _load_tokens(dt, bos, o_g, o_g < T_n, o_d, m_d, Di)  # [BT, BD] (0 past the end)
    b_B = _load_tokens(Bm, bos, o_p, m_p, o_s, m_s, Ds)  # [BT, BS]
    b_A = tl.load(A + o_d[:, None] * Ds + o_s[None, :], mask=m_d[:, None] & m_s[None, :], other=0.0).to(tl.float32)
    b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])  # [BT, BD, BS] decay factors
    if REVERSE:
        b_u = b_x[:, :, None] * b_B[:, None, :]  # dy_t C_t
    else:
        b_u = (b_dt * b_x)[:, :, None] * b_B[:, None, :]  # dt_t x_t B_t
    _, b_h = tl.associative_scan((b_a, b_u), axis=0, combine_fn=_decayed_sum)  # [BT, BD, BS]
    # the last scan row (rows past the sequence's end have decay 0 and input 0: they keep the state)
    b_last = tl.sum(tl.where((o_i == BT - 1)[:, None, None], b_h, 0.0), axis=0)  # [BD, BS]
    o_st = i_ch * Di * Ds + o_d[:, None] * Ds + o_s[None, :]
    tl.store(local + o_st, b_last, mask=m_d[:, None] & m_s[None, :])
    tl.store(dt_sum + i_ch * Di + o_d, tl.sum(b_dt, axis=0), mask=m_d)


@lean_launch
@given_heuristics(USE_INITIAL="h0", STORE_FINAL="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_carry_kernel(
    local,
    dt_sum,
    A,
    dt,
    h0,
    h_in,
    ht,
    cu_seqlens,
    chunk_offsets,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BS: tl.constexpr,
    REVERSE: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per sequence, chunk after chunk (backwards with ``REVERSE``): ``h_in[c] = carry``, then
    ``carry = local[c] + exp(A dt_sum[c]) carry``; ``ht`` = the last carry (with ``REVERSE`` the initial
    state's gradient ``exp(dt_0 A) carry``). ``h0``: the initial carry (the initial state, or ``dht``)."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    o_s = tl.arange(0, BS)  # [BS]
    m_ds = (o_d < Di)[:, None] & (o_s < Ds)[None, :]  # [BD, BS]
    o_ds = o_d[:, None] * Ds + o_s[None, :]  # [BD, BS]
    b_A = tl.load(A + o_ds, mask=m_ds, other=0.0).to(tl.float32)
    b_h = tl.zeros([BD, BS], dtype=tl.float32)
    if USE_INITIAL:
        b_h += tl.load(h0 + i_n * Di * Ds + o_ds, mask=m_ds, other=0.0).to(tl.float32)
    for i_c in range(0, NT):
        if REVERSE:
            i_ch = boh + NT - 1 - i_c
        else:
            i_ch = boh + i_c
        tl.store(h_in + i_ch * Di * Ds + o_ds, b_h, mask=m_ds)
        b_sum = tl.load(dt_sum + i_ch * Di + o_d, mask=o_d < Di, other=0.0)  # [BD]
        b_h = tl.load(local + i_ch * Di * Ds + o_ds, mask=m_ds, other=0.0) + tl.exp(b_A * b_sum[:, None]) * b_h
    if STORE_FINAL:
        if REVERSE:
            # dh0 = exp(dt_0 A) dh_0 (a sequence without tokens passes dht through: dt_0 reads as 0)
            b_dt0 = tl.load(dt + bos * Di + o_d, mask=(o_d < Di) & (o_d * 0 + T_n > 0), other=0.0).to(tl.float32)
            b_h = b_h * tl.exp(b_A * b_dt0[:, None])
        tl.store(ht + i_n * Di * Ds + o_ds, b_h.to(ht.dtype.element_ty), mask=m_ds)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_output_fwd_kernel(
    x,
    dt,
    A,
    Bm,
    Cm,
    h_in,
    y,
    cu_seqlens,
    chunk_indices,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk: ``h_t = scan_t + exp(A G_t) h_in`` and ``y_t = sum_n C_t[n] h_t[:, n]`` -> ``y [B, T, Di]``."""
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_s = tl.arange(0, BS)  # [BS]
    m_s = o_s < Ds
    o_p = i_tc * BT + tl.arange(0, BT)  # [BT]
    m_p = o_p < T_n
    m_ds = m_d[:, None] & m_s[None, :]
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    b_dt = _load_tokens(dt, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    b_B = _load_tokens(Bm, bos, o_p, m_p, o_s, m_s, Ds)  # [BT, BS]
    b_C = _load_tokens(Cm, bos, o_p, m_p, o_s, m_s, Ds)  # [BT, BS]
    b_A = tl.load(A + o_d[:, None] * Ds + o_s[None, :], mask=m_ds, other=0.0).to(tl.float32)  # [BD, BS]
    b_hin = tl.load(h_in + i_ch * Di * Ds + o_d[:, None] * Ds + o_s[None, :], mask=m_ds, other=0.0)  # [BD, BS]
    b_a = tl.exp(b_dt[:, :, None] * b_A[None, :, :])  # [BT, BD, BS] decay factors
    b_u = (b_dt * b_x)[:, :, None] * b_B[:, None, :]
    b_P, b_h = tl.associative_scan((b_a, b_u), axis=0, combine_fn=_decayed_sum)  # b_P = exp(A G_t)
    b_h += b_P * b_hin[None, :, :]
    b_y = tl.sum(b_h * b_C[:, None, :], axis=2)  # [BT, BD]
    tl.store(y + (bos + o_p[:, None]) * Di + o_d[None, :], b_y.to(y.dtype.element_ty), mask=m_p[:, None] & m_d[None, :])


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_bwd_kernel(
    x,
    dt,
    A,
    Bm,
    Cm,
    dy,
    h_in,
    dh_in,
    dx,
    ddt,
    dA_part,
    dB_part,
    dC_part,
    cu_seqlens,
    chunk_indices,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    BS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk: ``h_{t-1}``, ``h_t`` and ``dh_t`` of its tokens, then

    ``dx_t = dt_t sum_n dh_t B_t``, ``ddt_t = sum_n dh_t (A exp(dt_t A) h_{t-1} + B_t x_t)``,
    ``dA_part[chunk] = sum_t dh_t dt_t exp(dt_t A) h_{t-1}``, ``dB_part[d block]_t = sum_d dh_t dt_t x_t``,
    ``dC_part[d block]_t = sum_d dy_t h_t``.
    """
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_s = tl.arange(0, BS)  # [BS]
    m_s = o_s < Ds
    o_i = tl.arange(0, BT)
    o_p = i_tc * BT + o_i  # [BT]
    m_p = o_p < T_n
    m_ds = m_d[:, None] & m_s[None, :]
    o_ds = o_d[:, None] * Ds + o_s[None, :]  # [BD, BS]
    b_A = tl.load(A + o_ds, mask=m_ds, other=0.0).to(tl.float32)  # [BD, BS]
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    b_dt = _load_tokens(dt, bos, o_p, m_p, o_d, m_d, Di)
    b_dy = _load_tokens(dy, bos, o_p, m_p, o_d, m_d, Di)
    b_B = _load_tokens(Bm, bos, o_p, m_p, o_s, m_s, Ds)  # [BT, BS]
    b_C = _load_tokens(Cm, bos, o_p, m_p, o_s, m_s, Ds)

    # h_{t-1}: the scan of the previous token's inputs (none before the chunk's first row) plus the carry
    m_q = m_p & (o_i > 0)
    b_xq = _load_tokens(x, bos, o_p - 1, m_q, o_d, m_d, Di)  # [BT, BD]
    b_dtq = _load_tokens(dt, bos, o_p - 1, m_q, o_d, m_d, Di)
    b_Bq = _load_tokens(Bm, bos, o_p - 1, m_q, o_s, m_s, Ds)  # [BT, BS]
    b_Pq, b_hp = tl.associative_scan(
        (tl.exp(b_dtq[:, :, None] * b_A[None, :, :]), (b_dtq * b_xq)[:, :, None] * b_Bq[:, None, :]),
        axis=0,
        combine_fn=_decayed_sum,
    )  # [BT, BD, BS]; b_Pq = exp(A sum_{s <= t} dt_{s-1})
    b_hin = tl.load(h_in + i_ch * Di * Ds + o_ds, mask=m_ds, other=0.0)  # [BD, BS]
    b_hp += b_Pq * b_hin[None, :, :]
    b_e = tl.exp(b_dt[:, :, None] * b_A[None, :, :])  # [BT, BD, BS] exp(dt_t A)
    b_h = b_e * b_hp + (b_dt * b_x)[:, :, None] * b_B[:, None, :]

    # dh_t: the reverse scan of C_t dy_t with decays dt_{t+1} A, plus the carry from after the chunk
    m_r = (o_p + 1) < T_n
    b_dtr = _load_tokens(dt, bos, o_p + 1, m_r, o_d, m_d, Di)  # [BT, BD] dt_{t+1}
    b_Pr, b_dh = tl.associative_scan(
        (tl.exp(b_dtr[:, :, None] * b_A[None, :, :]), b_dy[:, :, None] * b_C[:, None, :]),
        axis=0,
        combine_fn=_decayed_sum,
        reverse=True,
    )  # [BT, BD, BS]; b_Pr = exp(A sum_{s >= t} dt_{s+1})
    b_dhin = tl.load(dh_in + i_ch * Di * Ds + o_ds, mask=m_ds, other=0.0)  # [BD, BS]
    b_dh += b_Pr * b_dhin[None, :, :]

    m_td = m_p[:, None] & m_d[None, :]
    o_td = (bos + o_p[:, None]) * Di + o_d[None, :]  # [BT, BD]
    b_sB = tl.sum(b_dh * b_B[:, None, :], axis=2)  # [BT, BD]
    tl.store(dx + o_td, (b_sB * b_dt).to(dx.dtype.element_ty), mask=m_td)
    b_dhg = b_dh * b_e * b_hp  # [BT, BD, BS] dL/d(g) per token, g = dt A
    b_ddt = tl.sum(b_dhg * b_A[None, :, :], axis=2) + b_sB * b_x
    tl.store(ddt + o_td, b_ddt.to(ddt.dtype.element_ty), mask=m_td)
    tl.store(dA_part + i_ch * Di * Ds + o_ds, tl.sum(b_dhg * b_dt[:, :, None], axis=0), mask=m_ds)
    m_ts = m_p[:, None] & m_s[None, :]
    # one [B * T, Ds] slab per channel block (B = the grid's last dim; 1 when packed)
    o_ts = i_d * tl.num_programs(2).to(tl.int64) * T * Ds + (bos + o_p[:, None]) * Ds + o_s[None, :]  # [BT, BS]
    tl.store(dB_part + o_ts, tl.sum(b_dh * (b_dt * b_x)[:, :, None], axis=1), mask=m_ts)
    tl.store(dC_part + o_ts, tl.sum(b_dy[:, :, None] * b_h, axis=1), mask=m_ts)


@lean_launch
@given_heuristics(USE_INITIAL="h0", STORE_FINAL="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_fused_recurrent_fwd_kernel(
    x,
    dt,
    A,
    Bm,
    Cm,
    y,
    h0,
    ht,
    cu_seqlens,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BD: tl.constexpr,
    BS: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per sequence and channel block, token by token: ``h = exp(dt A) h + dt x B``, ``y = sum_n C h``."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_s = tl.arange(0, BS)  # [BS]
    m_s = o_s < Ds
    m_ds = m_d[:, None] & m_s[None, :]
    o_ds = o_d[:, None] * Ds + o_s[None, :]  # [BD, BS]
    b_A = tl.load(A + o_ds, mask=m_ds, other=0.0).to(tl.float32)
    b_h = tl.zeros([BD, BS], dtype=tl.float32)
    if USE_INITIAL:
        b_h += tl.load(h0 + i_n * Di * Ds + o_ds, mask=m_ds, other=0.0).to(tl.float32)
    for t in range(0, T_n):
        b_x = tl.load(x + (bos + t) * Di + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
        b_dt = tl.load(dt + (bos + t) * Di + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_B = tl.load(Bm + (bos + t) * Ds + o_s, mask=m_s, other=0.0).to(tl.float32)  # [BS]
        b_C = tl.load(Cm + (bos + t) * Ds + o_s, mask=m_s, other=0.0).to(tl.float32)
        b_h = tl.exp(b_dt[:, None] * b_A) * b_h + (b_dt * b_x)[:, None] * b_B[None, :]
        b_y = tl.sum(b_h * b_C[None, :], axis=1)  # [BD]
        tl.store(y + (bos + t) * Di + o_d, b_y.to(y.dtype.element_ty), mask=m_d)
    if STORE_FINAL:
        tl.store(ht + i_n * Di * Ds + o_ds, b_h.to(ht.dtype.element_ty), mask=m_ds)


# ----------------------------------------------------------------------------------------------- host side


def _sizes(x: torch.Tensor, A: torch.Tensor) -> tuple[int, int, int, int, int]:
    Bsz, T, Di = x.shape
    Ds = A.shape[1]
    BS = state_block(Ds)
    return Bsz, T, Di, Ds, BS


def _carry(local, dt_sum, A, dt, h0, want_final, layout, Di, Ds, BS, reverse, final_dtype):
    NC = local.shape[0]
    h_in = empty(NC, Di, Ds, dtype=torch.float32, device=local.device)
    ht = empty(layout.num_seqs, Di, Ds, dtype=final_dtype, device=local.device) if want_final else None
    BD = max(1, min(next_power_of_2(Di), 2048 // BS, 32))
    mamba_chunk_carry_kernel[(cdiv(Di, BD), layout.num_seqs)](
        local, dt_sum, A, dt, h0, h_in, ht, layout.cu_seqlens, layout.chunk_offsets, layout.seq_len,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, BS=BS, REVERSE=reverse,
    )  # fmt: skip
    return h_in, ht


def _local_states(x, dt, A, Bm, layout, Di, Ds, BS, reverse):
    NC = layout.batch * layout.row_chunks
    local = empty(NC, Di, Ds, dtype=torch.float32, device=x.device)
    dt_sum = empty(NC, Di, dtype=torch.float32, device=x.device)
    BD = channel_block(Di, BS, layout.chunk_size)
    mamba_chunk_state_kernel[(cdiv(Di, BD), layout.row_chunks, layout.batch)](
        x, dt, A, Bm, local, dt_sum, layout.cu_seqlens, layout.chunk_indices, layout.seq_len,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, BS=BS, REVERSE=reverse,
    )  # fmt: skip
    return local, dt_sum


def chunk_selective_scan_fwd(x, dt, A, Bm, Cm, h0, want_final, layout):
    """``y [B, T, Di]`` (float32), the final state ``[N, Di, Ds]`` (float32) or ``None``, and the states
    entering each chunk ``[chunks, Di, Ds]`` (kept for the backward). ``dt`` is already discretized."""
    Bsz, T, Di, Ds, BS = _sizes(x, A)
    local, dt_sum = _local_states(x, dt, A, Bm, layout, Di, Ds, BS, reverse=False)
    h_in, ht = _carry(local, dt_sum, A, dt, h0, want_final, layout, Di, Ds, BS, False, torch.float32)
    y = empty(Bsz, T, Di, dtype=torch.float32, device=x.device)
    BD = channel_block(Di, BS, layout.chunk_size)
    mamba_chunk_output_fwd_kernel[(cdiv(Di, BD), layout.row_chunks, Bsz)](
        x, dt, A, Bm, Cm, h_in, y, layout.cu_seqlens, layout.chunk_indices, T,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, BS=BS,
    )  # fmt: skip
    return y, ht, h_in


def chunk_selective_scan_bwd(x, dt, A, Bm, Cm, h_in, dy, dht, want_dh0, layout):
    """Gradients ``(dx, ddt, dA, dB, dC, dh0)`` (float32; ``dh0`` ``None`` unless ``want_dh0``) of
    ``y = scan(x, dt, A, B, C)`` given ``dy [B, T, Di]`` and ``dht [N, Di, Ds]`` (or ``None``)."""
    Bsz, T, Di, Ds, BS = _sizes(x, A)
    local, dt_sum = _local_states(dy, dt, A, Cm, layout, Di, Ds, BS, reverse=True)
    dh_in, dh0 = _carry(local, dt_sum, A, dt, dht, want_dh0, layout, Di, Ds, BS, True, torch.float32)
    BD = channel_block(Di, BS, layout.chunk_size, TILE // 2)  # ~8 tiles live in this kernel: half-size ones
    ND = cdiv(Di, BD)
    dx = empty(Bsz, T, Di, dtype=torch.float32, device=x.device)
    ddt = empty(Bsz, T, Di, dtype=torch.float32, device=x.device)
    dA_part = empty(*h_in.shape, dtype=torch.float32, device=x.device)
    dB_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    dC_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    mamba_chunk_bwd_kernel[(ND, layout.row_chunks, Bsz)](
        x, dt, A, Bm, Cm, dy, h_in, dh_in, dx, ddt, dA_part, dB_part, dC_part, layout.cu_seqlens,
        layout.chunk_indices, T, Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, BS=BS,
    )  # fmt: skip
    return dx, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dh0


def fused_recurrent_selective_scan_fwd(x, dt, A, Bm, Cm, h0, want_final, cu_seqlens):
    """Token by token: ``y [B, T, Di]`` (float32) and the final state ``[N, Di, Ds]`` (float32) or ``None``."""
    Bsz, T, Di, Ds, BS = _sizes(x, A)
    N = Bsz if cu_seqlens is None else cu_seqlens.numel() - 1
    y = empty(Bsz, T, Di, dtype=torch.float32, device=x.device)
    ht = empty(N, Di, Ds, dtype=torch.float32, device=x.device) if want_final else None
    BD = max(1, min(next_power_of_2(Di), 2048 // BS, 32))
    mamba_fused_recurrent_fwd_kernel[(cdiv(Di, BD), N)](
        x, dt, A, Bm, Cm, y, h0, ht, cu_seqlens, T, Di=Di, Ds=Ds, BD=BD, BS=BS
    )
    return y, ht


def layout_for(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> ChunkLayout:
    """The chunking of ``x [B, T, Di]`` (and ``cu_seqlens``) the chunk kernels launch with."""
    return ChunkLayout.build(x, cu_seqlens, CHUNK_SIZE)
