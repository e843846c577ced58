"""Triton kernels of the selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``,
``y_t = (C_t . h_t + D x_t) silu(z_t)`` with ``dt_t = softplus(dt_t + dt_bias)`` fused in.

Every ``(channel d, state n)`` pair is an independent scalar recurrence with the log decay
``g_t[d, n] = dt_t[d] A[d, n]`` and the input ``u_t[d, n] = dt_t[d] x_t[d] B_t[n]``. A program holds a chunk's
``[BT, BD]`` tile of tokens x channels (``BD`` up to 128 channels in the forward, 32 in the backward: 64-256
byte rows of the token-major inputs) and walks the states ``n`` with a runtime loop (an unrolled one spilled):
per state, ``A[:, n]`` (a ``[BD]`` row of the transposed ``A^T [Ds, Di]``), ``B[:, n]`` / ``C[:, n]``
(``[BT]`` columns) and the ``[BD]`` carry rows are vectors, and the recurrence of that state is a
``tl.associative_scan`` over the 2-D tile of (decay factor, state) pairs
``(a1, h1) . (a2, h2) = (a1 a2, a2 h1 + h2)``, ``a_t = exp(dt_t A)``, in float32. With ``BD = 32 x num_warps``
the compiler gives each lane one channel and each thread all ``BT`` tokens of it, so the scans run in-thread
(no shuffles, no shared memory); the price is ``BT`` registers per live tile, hence the narrower backward tiles
(one warp, ~8 live tiles), whose main overhead is then the cross-lane sums of ``dB, dC`` over channels. The
scanned factor products are the chunk-local decays ``exp(A G_t)`` the carry needs (``G_t`` the chunk-local
cumsum of ``dt``). Per-chunk states are stored transposed, ``[chunks, Ds, Di]``, so their rows are contiguous.

Forward, three launches:

1. :func:`mamba_chunk_state_kernel` (per chunk): the chunk's own contribution to the state,
   ``local[n] = sum_t exp(A[:, n] (G_end - G_t)) u_t[:, n]`` (one ``exp`` and a column sum per state: no scan),
   and ``sum dt`` over the chunk (its decay is ``exp(A sum dt)``).
2. :func:`mamba_chunk_carry_kernel` (per sequence, serial over its chunks): the state entering each chunk,
   ``h_in[c+1] = exp(A sum dt_c) h_in[c] + local_c``, and the final state.
3. :func:`mamba_chunk_output_fwd_kernel` (per chunk): per state the scan plus the carry,
   ``h_t = scan_t + exp(A G_t) h_in``, accumulated into ``y_t = sum_n C_t[n] h_t[:, n]``; then the epilogue
   ``(y + D x) silu(z)`` in registers and one store in the input dtype.

Backward (``do`` the output's gradient, ``dy = do silu(z)`` the scan output's): ``dh_t = C_t dy_t +
exp(dt_{t+1} A) dh_{t+1}`` (``dh_{T} :=`` the final state's gradient) is the same recurrence backwards in time
with the decays shifted by one token: stages 1-2 run again with ``REVERSE``. :func:`mamba_chunk_bwd_kernel`
then, per chunk and state, rescans ``h_t`` (forward) and ``dh_t`` (reverse ``tl.associative_scan``) and
accumulates ``dx, ddt`` (chained through softplus), ``dz`` (recomputing ``y``) in registers; ``dA`` (summed over
the chunk's tokens), ``dD`` and ``d dt_bias`` go to per-chunk partials and ``dB, dC`` (summed over the
program's ``BD`` channels) to per-channel-block partials ``[Di / BD, B * T, Ds]``, which the host adds up.
``exp(dt_t A) h_{t-1} = h_t - u_t`` gives the ``dA`` / ``ddt`` terms without a third scan.

The fused recurrent kernel (decoding) walks the tokens one at a time with a ``[BD, BS]`` state.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds, sequence_bounds, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, given_heuristics
from fla.ops.utils.tensor_ops import softplus
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

CHUNK_SIZE = 32
FWD_CHANNELS = 128  # most channels per program of the forward kernels ([BT, BD] tiles, ~4 live)
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x log2(e)): A is pre-scaled once per state
BWD_CHANNELS = 32  # most channels per program of the backward kernel (~12 live [BT, BD] tiles: one warp)


def state_block(Ds: int) -> int:
    """``BS``: all ``d_state`` states in one block (a power of two, at least 4): the carry / recurrent kernels."""
    return max(4, next_power_of_2(Ds))


def channel_block(Di: int, cap: int) -> int:
    """``BD``: channels per program of the chunk kernels (a power of two, at least 16, at most ``cap``)."""
    return max(16, min(next_power_of_2(Di), cap))


def _configs():
    # no tl.dot and no pipelined loop here: the warp count only. With BD = 32 x warps the compiler lays a tile
    # out as one channel per lane and all BT tokens in each thread, so the scans along tokens stay in-thread
    # (more warps split the tokens across warps: the scans then go through shared memory)
    return autotune_configs(warps=(1, 2, 4), stages=(1,))


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


@triton.jit
def _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di: tl.constexpr, HAS_BIAS: tl.constexpr,
             SOFTPLUS: tl.constexpr):  # fmt: skip
    """``(dt, v)``: the discretized step sizes ``[BT, BD]`` (0 outside the masks: a masked row keeps the state)
    and ``v = dt + dt_bias`` before the softplus."""
    b_v = _load_tokens(dt, bos, o_p, m_p, o_d, m_d, Di)
    if HAS_BIAS:
        b_v += tl.load(dt_bias + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if SOFTPLUS:
        b_dt = tl.where(m_p[:, None] & m_d[None, :], softplus(b_v), 0.0)
    else:
        b_dt = tl.where(m_p[:, None] & m_d[None, :], b_v, 0.0)
    return b_dt, b_v


@triton.jit
def _silu(z):
    return z * tl.sigmoid(z)


@triton.jit
def _store_output(y, x, D, z, b_y, b_x, bos, o_p, m_p, o_d, m_d, Di: tl.constexpr, HAS_D: tl.constexpr,
                  HAS_Z: tl.constexpr):  # fmt: skip
    """The forward's epilogue on a ``[BT, BD]`` tile: ``(b_y + D x) silu(z)`` -> ``y`` (its dtype)."""
    if HAS_D:
        b_y += b_x * tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        b_y *= _silu(_load_tokens(z, bos, o_p, m_p, o_d, m_d, Di))
    tl.store(y + (bos + o_p[:, None]) * Di + o_d[None, :], b_y.to(y.dtype.element_ty), mask=m_p[:, None] & m_d[None, :])


@triton.jit
def _store_input_grads(x, dt, dt_bias, D, z, do, dx, ddt, dz, b_sA, b_sB, b_y, b_dt, b_dy, bos, o_p, m_p, o_d, m_d,
                       Di: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                       HAS_BIAS: tl.constexpr):  # fmt: skip
    """The backward's epilogue on a ``[BT, BD]`` tile, from ``b_sA = sum_n A q``, ``b_sB = sum_n dh B``,
    ``b_y = C . h`` (read with ``HAS_Z`` only), ``dt`` and ``dy = do silu(z)``: ``dx = dt sB + D dy``,
    ``ddt = sA + sB x`` (times ``sigmoid(dt + dt_bias)`` with softplus), ``dz = do (y + D x) silu'(z)``, each
    stored in its dtype. Returns the column sums ``(sum_t dy x, sum_t ddt)`` ``[BD]``: the tile's share of ``dD``
    and ``d dt_bias``. ``x, do, z`` and ``dt + dt_bias`` are loaded again here (cache hits) rather than kept live
    through the state loop."""
    m_td = m_p[:, None] & m_d[None, :]
    o_td = (bos + o_p[:, None]) * Di + o_d[None, :]  # [BT, BD]
    b_dx = b_sB * b_dt
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)
    if HAS_D:
        b_D = tl.load(D + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
        b_dx += b_dy * b_D[None, :]
    tl.store(dx + o_td, b_dx.to(dx.dtype.element_ty), mask=m_td)
    b_ddt = b_sA + b_sB * b_x
    if SOFTPLUS:
        _, b_v = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, False)
        b_ddt *= tl.sigmoid(b_v)
    b_ddt = tl.where(m_td, b_ddt, 0.0)
    tl.store(ddt + o_td, b_ddt.to(ddt.dtype.element_ty), mask=m_td)
    if HAS_Z:
        if HAS_D:
            b_y += b_x * b_D[None, :]
        b_z = _load_tokens(z, bos, o_p, m_p, o_d, m_d, Di)
        b_sig = tl.sigmoid(b_z)
        b_dz = _load_tokens(do, bos, o_p, m_p, o_d, m_d, Di) * b_y * b_sig * (1.0 + b_z * (1.0 - b_sig))
        tl.store(dz + o_td, b_dz.to(dz.dtype.element_ty), mask=m_td)
    return tl.sum(b_dy * b_x, axis=0), tl.sum(b_ddt, axis=0)


@lean_launch
@given_heuristics(HAS_Z="z", HAS_BIAS="dt_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=_configs(), key=["BD", "Ds"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_state_kernel(
    x,
    z,
    dt,
    dt_bias,
    At,
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
    REVERSE: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk and channel block: the chunk's contribution to the state from a zero state ->
    ``local [NC, Ds, Di]``, and ``dt_sum [NC, Di]``.

    Forward: ``x`` the inputs, ``Bm`` = B; decays ``dt_t A``, inputs ``dt_t x_t B_t``; the contribution to the
    state after the chunk's last token is ``sum_t exp(A sum_{s > t} dt_s) dt_t x_t B_t``.
    Reverse: ``x`` = the output gradient ``do`` (times ``silu(z)`` with ``HAS_Z``), ``Bm`` = C; decays
    ``dt_{t+1} A`` (0 past the sequence's end), inputs ``dy_t C_t``; the contribution to ``dh`` at the
    chunk's first token is ``sum_t exp(A sum_{s < t} dt_{s+1}) dy_t C_t``. ``dt_sum`` sums the decays' ``dt``.
    """
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_p = i_tc * BT + tl.arange(0, BT)  # [BT] token positions in the sequence
    m_p = o_p < T_n
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    if REVERSE:
        if HAS_Z:
            b_x *= _silu(_load_tokens(z, bos, o_p, m_p, o_d, m_d, Di))
        b_dt, _ = _load_dt(dt, dt_bias, bos, o_p + 1, o_p + 1 < T_n, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
        b_G = tl.cumsum(b_dt, axis=0) - b_dt  # [BT, BD] sum_{s < t} dt_{s+1}
        b_u = b_x
    else:
        b_dt, _ = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
        b_G = tl.sum(b_dt, axis=0)[None, :] - tl.cumsum(b_dt, axis=0)  # [BT, BD] sum_{s > t} dt_s
        b_u = b_x * b_dt
    p_B = Bm + (bos + o_p) * Ds  # [BT] pointers to each token's B (or C) row
    for n in range(Ds):
        b_A2 = tl.load(At + n * Di + o_d, mask=m_d, other=0.0).to(tl.float32) * LOG2E  # [BD]
        b_B = tl.load(p_B + n, mask=m_p, other=0.0).to(tl.float32)  # [BT]
        b_l = tl.sum(tl.exp2(b_G * b_A2[None, :]) * b_u * b_B[:, None], axis=0)  # [BD]
        tl.store(local + (i_ch * Ds + n) * Di + o_d, b_l, mask=m_d)
    tl.store(dt_sum + i_ch * Di + o_d, tl.sum(b_dt, axis=0), mask=m_d)


@lean_launch
@given_heuristics(USE_INITIAL="h0", STORE_FINAL="ht", HAS_BIAS="dt_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["BD", "BS"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_carry_kernel(
    local,
    dt_sum,
    At,
    dt,
    dt_bias,
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
    SOFTPLUS: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per sequence, chunk after chunk (backwards with ``REVERSE``): ``h_in[c] = carry``, then
    ``carry = local[c] + exp(A dt_sum[c]) carry``; ``ht`` = the last carry (with ``REVERSE`` the initial
    state's gradient ``exp(dt_0 A) carry``). ``h0``: the initial carry (the initial state, or ``dht``).
    ``local, h_in [NC, Ds, Di]`` (transposed); ``h0, ht [N, Di, Ds]`` (the public layout)."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    o_s = tl.arange(0, BS)  # [BS]
    m_d = o_d < Di
    m_sd = (o_s < Ds)[:, None] & m_d[None, :]  # [BS, BD]
    o_sd = o_s[:, None] * Di + o_d[None, :]  # [BS, BD] offsets in a transposed state
    o_pub = o_d[None, :] * Ds + o_s[:, None]  # [BS, BD] offsets in a public [Di, Ds] state
    b_A = tl.load(At + o_sd, mask=m_sd, other=0.0).to(tl.float32)
    b_h = tl.zeros([BS, BD], dtype=tl.float32)
    if USE_INITIAL:
        b_h += tl.load(h0 + i_n * Di * Ds + o_pub, mask=m_sd, other=0.0).to(tl.float32)
    for i_c in range(0, NT):
        if REVERSE:
            i_ch = boh + NT - 1 - i_c
        else:
            i_ch = boh + i_c
        tl.store(h_in + i_ch * Di * Ds + o_sd, b_h, mask=m_sd)
        b_sum = tl.load(dt_sum + i_ch * Di + o_d, mask=m_d, other=0.0)  # [BD]
        b_h = tl.load(local + i_ch * Di * Ds + o_sd, mask=m_sd, other=0.0) + tl.exp(b_A * b_sum[None, :]) * b_h
    if STORE_FINAL:
        if REVERSE:
            # dh0 = exp(dt_0 A) dh_0 (a sequence without tokens passes dht through: dt_0 reads as 0)
            o_0 = tl.zeros([1], dtype=tl.int64)
            b_dt0, _ = _load_dt(dt, dt_bias, bos, o_0, o_0 < T_n, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)  # [1, BD]
            b_h = b_h * tl.exp(b_A * b_dt0)
        tl.store(ht + i_n * Di * Ds + o_pub, b_h.to(ht.dtype.element_ty), mask=m_sd)


@lean_launch
@given_heuristics(HAS_D="D", HAS_Z="z", HAS_BIAS="dt_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=_configs(), key=["BD", "Ds"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_output_fwd_kernel(
    x,
    dt,
    dt_bias,
    At,
    Bm,
    Cm,
    D,
    z,
    h_in,
    y,
    cu_seqlens,
    chunk_indices,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk and channel block: ``h_t = scan_t + exp(A G_t) h_in`` state by state,
    ``y_t = (sum_n C_t[n] h_t[:, n] + D x_t) silu(z_t)`` -> ``y [B, T, Di]`` (its dtype)."""
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_p = (i_tc * BT).to(tl.int32) + tl.arange(0, BT)  # [BT] positions in the sequence (int32: few registers)
    m_p = o_p < T_n
    b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
    b_dt, _ = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
    b_u = b_dt * b_x
    b_y = tl.zeros([BT, BD], dtype=tl.float32)
    # B / C rows: scalar bases and int32 offsets (a [BT] vector sits in every thread: int64 pointers cost registers)
    p_B, p_C, o_r = Bm + bos * Ds, Cm + bos * Ds, o_p * Ds
    for n in range(Ds):
        b_A2 = tl.load(At + n * Di + o_d, mask=m_d, other=0.0).to(tl.float32) * LOG2E  # [BD]
        b_B = tl.load(p_B + o_r + n, mask=m_p, other=0.0).to(tl.float32)  # [BT]
        b_C = tl.load(p_C + o_r + n, mask=m_p, other=0.0).to(tl.float32)  # [BT]
        b_hin = tl.load(h_in + (i_ch * Ds + n) * Di + o_d, mask=m_d, other=0.0)  # [BD]
        b_P, b_h = tl.associative_scan(
            (tl.exp2(b_dt * b_A2[None, :]), b_u * b_B[:, None]), axis=0, combine_fn=_decayed_sum
        )  # [BT, BD]; b_P = exp(A G_t)
        b_y += (b_h + b_P * b_hin[None, :]) * b_C[:, None]
    _store_output(y, x, D, z, b_y, b_x, bos, o_p, m_p, o_d, m_d, Di, HAS_D, HAS_Z)


@lean_launch
@given_heuristics(HAS_D="D", HAS_Z="z", HAS_BIAS="dt_bias", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=_configs(), key=["BD", "Ds"])
@triton.jit(do_not_specialize=["T"])
def mamba_chunk_bwd_kernel(
    x,
    dt,
    dt_bias,
    At,
    Bm,
    Cm,
    D,
    z,
    do,
    h_in,
    dh_in,
    dx,
    ddt,
    dz,
    dA_part,
    dB_part,
    dC_part,
    dD_part,
    dbias_part,
    cu_seqlens,
    chunk_indices,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per chunk and channel block, state by state: ``h_t`` (forward scan + carry ``h_in``) and ``dh_t`` (reverse
    scan of ``C_t dy_t``, decays ``dt_{t+1} A``, + carry ``dh_in``), then with ``q_t = dh_t exp(dt_t A) h_{t-1}
    = dh_t (h_t - u_t)``:

    ``dx_t = dt_t sum_n dh_t B_t + D dy_t``, ``ddt_t = sum_n (A q_t + dh_t B_t x_t)`` (times
    ``sigmoid(dt + dt_bias)`` with softplus), ``dz_t = do_t (y_t + D x_t) silu'(z_t)``,
    ``dA_part[chunk] = sum_t dt_t q_t``, ``dB_part[d block]_t = sum_d dh_t dt_t x_t``,
    ``dC_part[d block]_t = sum_d dy_t h_t``, ``dD_part[chunk] = sum_t dy_t x_t``,
    ``dbias_part[chunk] = sum_t ddt_t``.
    """
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < Di
    o_p = (i_tc * BT).to(tl.int32) + tl.arange(0, BT)  # [BT] positions in the sequence (int32: few registers)
    m_p = o_p < T_n
    # live through the state loop: dt, dt_{t+1}, u = dt x, dy and three accumulators ([BT, BD] each); x, do, z
    # and dt + dt_bias are loaded again for the epilogue (cache hits) rather than kept in registers
    b_dt, _ = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
    b_dtr, _ = _load_dt(dt, dt_bias, bos, o_p + 1, o_p + 1 < T_n, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)  # dt_{t+1}
    b_u = b_dt * _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)
    b_dy = _load_tokens(do, bos, o_p, m_p, o_d, m_d, Di)
    if HAS_Z:
        b_dy *= _silu(_load_tokens(z, bos, o_p, m_p, o_d, m_d, Di))
    b_y = tl.zeros([BT, BD], dtype=tl.float32)  # C . h, for dz (dead code without z)
    b_sB = tl.zeros([BT, BD], dtype=tl.float32)  # sum_n dh_t B_t
    b_sA = tl.zeros([BT, BD], dtype=tl.float32)  # sum_n A q_t
    p_dB = dB_part + (i_d * tl.num_programs(2).to(tl.int64) * T + bos) * Ds  # this block's [B * T, Ds] slab
    p_dC = dC_part + (i_d * tl.num_programs(2).to(tl.int64) * T + bos) * Ds
    # B / C rows: scalar bases and int32 offsets (a [BT] vector sits in every thread: int64 pointers cost registers)
    p_B, p_C, o_r = Bm + bos * Ds, Cm + bos * Ds, o_p * Ds
    for n in range(Ds):
        b_A = tl.load(At + n * Di + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
        b_A2 = b_A * LOG2E
        b_B = tl.load(p_B + o_r + n, mask=m_p, other=0.0).to(tl.float32)  # [BT]
        b_C = tl.load(p_C + o_r + n, mask=m_p, other=0.0).to(tl.float32)  # [BT]
        b_hin = tl.load(h_in + (i_ch * Ds + n) * Di + o_d, mask=m_d, other=0.0)  # [BD]
        b_dhin = tl.load(dh_in + (i_ch * Ds + n) * Di + o_d, mask=m_d, other=0.0)  # [BD]
        b_un = b_u * b_B[:, None]  # [BT, BD] dt_t x_t B_t[n]
        b_P, b_h = tl.associative_scan((tl.exp2(b_dt * b_A2[None, :]), b_un), axis=0, combine_fn=_decayed_sum)
        b_h += b_P * b_hin[None, :]
        b_Pr, b_dh = tl.associative_scan(
            (tl.exp2(b_dtr * b_A2[None, :]), b_dy * b_C[:, None]), axis=0, combine_fn=_decayed_sum, reverse=True
        )  # b_Pr = exp(A sum_{s >= t} dt_{s+1})
        b_dh += b_Pr * b_dhin[None, :]
        b_q = b_dh * (b_h - b_un)  # dh_t exp(dt_t A) h_{t-1}
        b_sB += b_dh * b_B[:, None]
        b_sA += b_q * b_A[None, :]
        if HAS_Z:
            b_y += b_h * b_C[:, None]
        tl.store(dA_part + (i_ch * Ds + n) * Di + o_d, tl.sum(b_q * b_dt, axis=0), mask=m_d)
        tl.store(p_dB + o_r + n, tl.sum(b_dh * b_u, axis=1), mask=m_p)
        tl.store(p_dC + o_r + n, tl.sum(b_dy * b_h, axis=1), mask=m_p)
    b_dD, b_dbias = _store_input_grads(x, dt, dt_bias, D, z, do, dx, ddt, dz, b_sA, b_sB, b_y, b_dt, b_dy, bos, o_p,
                                       m_p, o_d, m_d, Di, SOFTPLUS, HAS_D, HAS_Z, HAS_BIAS)  # fmt: skip
    if HAS_D:
        tl.store(dD_part + i_ch * Di + o_d, b_dD, mask=m_d)
    if HAS_BIAS:
        tl.store(dbias_part + i_ch * Di + o_d, b_dbias, mask=m_d)


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


def _carry(local, dt_sum, At, dt, dt_bias, softplus, h0, want_final, layout, reverse):
    """``h_in [NC, Ds, Di]`` (float32) and the last carry ``[N, Di, Ds]`` (float32) or ``None``."""
    NC, Ds, Di = local.shape
    BS = state_block(Ds)
    h_in = empty(NC, Ds, Di, dtype=torch.float32, device=local.device)
    ht = empty(layout.num_seqs, Di, Ds, dtype=torch.float32, device=local.device) if want_final else None
    BD = max(1, min(next_power_of_2(Di), 2048 // BS, 32))
    mamba_chunk_carry_kernel[(cdiv(Di, BD), layout.num_seqs)](
        local, dt_sum, At, dt, dt_bias, h0, h_in, ht, layout.cu_seqlens, layout.chunk_offsets, layout.seq_len,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, BS=BS, REVERSE=reverse, SOFTPLUS=softplus,
    )  # fmt: skip
    return h_in, ht


def _local_states(x, z, dt, dt_bias, softplus, At, Bm, layout, reverse):
    """Each chunk's own contribution ``[NC, Ds, Di]`` and its ``sum dt`` ``[NC, Di]`` (float32)."""
    Ds, Di = At.shape
    NC = layout.batch * layout.row_chunks
    local = empty(NC, Ds, Di, dtype=torch.float32, device=x.device)
    dt_sum = empty(NC, Di, dtype=torch.float32, device=x.device)
    BD = channel_block(Di, FWD_CHANNELS)
    mamba_chunk_state_kernel[(cdiv(Di, BD), layout.row_chunks, layout.batch)](
        x, z, dt, dt_bias, At, Bm, local, dt_sum, layout.cu_seqlens, layout.chunk_indices, layout.seq_len,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, REVERSE=reverse, SOFTPLUS=softplus,
    )  # fmt: skip
    return local, dt_sum


def chunk_selective_scan_fwd(x, dt, A, Bm, Cm, D, z, dt_bias, softplus, h0, want_final, layout):
    """``out = (C . h + D x) silu(z) [B, T, Di]`` (``x.dtype``), the final state ``[N, Di, Ds]`` (float32) or
    ``None``, and the states entering each chunk ``[chunks, Ds, Di]`` (float32, kept for the backward).
    ``dt`` raw: ``softplus(dt + dt_bias)`` happens in the kernels (``D, z, dt_bias`` may be ``None``)."""
    Bsz, T, Di, Ds, _ = _sizes(x, A)
    At = A.t().contiguous()  # [Ds, Di]: a state's channels are contiguous
    local, dt_sum = _local_states(x, None, dt, dt_bias, softplus, At, Bm, layout, reverse=False)
    h_in, ht = _carry(local, dt_sum, At, dt, dt_bias, softplus, h0, want_final, layout, reverse=False)
    y = empty(Bsz, T, Di, dtype=x.dtype, device=x.device)
    BD = channel_block(Di, FWD_CHANNELS)
    mamba_chunk_output_fwd_kernel[(cdiv(Di, BD), layout.row_chunks, Bsz)](
        x, dt, dt_bias, At, Bm, Cm, D, z, h_in, y, layout.cu_seqlens, layout.chunk_indices, T,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, SOFTPLUS=softplus,
    )  # fmt: skip
    return y, ht, h_in


def chunk_selective_scan_bwd(x, dt, A, Bm, Cm, D, z, dt_bias, softplus, h_in, do, dht, want_dh0, layout):
    """Gradients ``(dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dh0)`` of :func:`chunk_selective_scan_fwd`'s output
    given ``do [B, T, Di]`` and ``dht [N, Di, Ds]`` (or ``None``): ``dx, ddt, dz`` in their inputs' dtypes, the
    rest float32; ``dD, dz, ddt_bias`` ``None`` where the input is, ``dh0`` ``None`` unless ``want_dh0``."""
    Bsz, T, Di, Ds, _ = _sizes(x, A)
    At = A.t().contiguous()
    local, dt_sum = _local_states(do, z, dt, dt_bias, softplus, At, Cm, layout, reverse=True)
    dh_in, dh0 = _carry(local, dt_sum, At, dt, dt_bias, softplus, dht, want_dh0, layout, reverse=True)
    BD = channel_block(Di, BWD_CHANNELS)
    ND, NC = cdiv(Di, BD), h_in.shape[0]
    dx = empty(Bsz, T, Di, dtype=x.dtype, device=x.device)
    ddt = empty(Bsz, T, Di, dtype=dt.dtype, device=x.device)
    dz = empty(Bsz, T, Di, dtype=z.dtype, device=x.device) if z is not None else None
    dA_part = empty(NC, Ds, Di, dtype=torch.float32, device=x.device)
    dB_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    dC_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    dD_part = empty(NC, Di, dtype=torch.float32, device=x.device) if D is not None else None
    dbias_part = empty(NC, Di, dtype=torch.float32, device=x.device) if dt_bias is not None else None
    mamba_chunk_bwd_kernel[(ND, layout.row_chunks, Bsz)](
        x, dt, dt_bias, At, Bm, Cm, D, z, do, h_in, dh_in, dx, ddt, dz, dA_part, dB_part, dC_part, dD_part,
        dbias_part, layout.cu_seqlens, layout.chunk_indices, T,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=BD, SOFTPLUS=softplus,
    )  # fmt: skip
    dD = dD_part.sum(0) if D is not None else None
    ddt_bias = dbias_part.sum(0) if dt_bias is not None else None
    return dx, ddt, dA_part.sum(0).t(), dB_part.sum(0), dC_part.sum(0), dD, dz, ddt_bias, dh0


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
