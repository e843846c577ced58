"""The selective scan in one pass per direction: a program walks its sequence chunk after chunk (forwards, then
backwards for the gradients) and carries the states itself, instead of the chunk-parallel stages of
:mod:`fla.ops.mamba.scan` (a chunk-state pass, a carry walk and an output pass).

Why: at Mamba's sizes the arithmetic per (token, channel, state) element, not memory, bounds the op, and every
pass of the chunk-parallel form redoes it (``exp(dt_t A[d, n])`` included). One pass takes one exponential per
element-state forward (the chunk-parallel form: two) and one backward (three): the backward's reverse recurrence
``dh_t = C_t dy_t + exp(dt_{t+1} A) dh_{t+1}`` is scanned from the forward factors ``a_t = exp(dt_t A)`` with a
shifted combine (:func:`_shifted_decayed_sum`), and the carry into the previous chunk is ``a_{t0} dh_{t0}``. The
price is parallelism: ``num_seqs x Di / 32`` programs, enough at training sizes (``B = 8, Di = 1536``: 384), too
few for a few long sequences, which keep the chunk-parallel form (:func:`use_sequential`).

Layout: a program owns 32 channels (one per lane) and ``SG`` state groups (one per warp); its tiles are
``[BT, SG, BD]`` (tokens x states x channels) with all ``BT`` tokens of a channel in-thread, so the scans along
tokens are in-thread and the first / last token rows are register picks (:func:`_row`). Per chunk and group of
``SG`` states, the carried state enters the scan as part of the first token's input
(``u_0 += a_0 h_carry``), the last row of the scan is the next carry. Carries cross the runtime state loop through
a small float32 scratch (same thread store then load): ``h_in [chunks, Ds, Di]`` forward (kept: the backward's
per-chunk starting states) and ``[N, Ds, Di]`` backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import sequence_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import given_heuristics
from fla.ops.mamba.scan import LOG2E, _decayed_sum, _load_dt, _load_tokens, _silu, _store_input_grads, _store_output
from fla.utils import empty
from fla.utils.backend import IS_TRITON_INTERPRET
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv

CHANNELS = 32  # channels per program: one per lane
# the fewest programs (sequences x channel blocks) for which `auto` takes one pass: two per SM of a 132-SM H100
# (below, the GPU would run a few long serial walks); set from the SM count, not yet from a measured crossover
MIN_PROGRAMS = 264


def _configs():
    # SG state groups, one per warp: more warps hide latency; the per-chunk loads and the epilogue are shared
    if IS_TRITON_INTERPRET:
        return [triton.Config({"SG": 2}, num_warps=2, num_stages=1)]  # two groups: d_state 3 or 5 masks one
    return [triton.Config({"SG": w}, num_warps=w, num_stages=1) for w in (1, 2, 4)]


def use_sequential(layout: ChunkLayout, Di: int) -> bool:
    """Whether :func:`sequential_selective_scan_fwd` / ``_bwd`` run the op (enough programs to fill the GPU)."""
    return layout.num_seqs * cdiv(Di, CHANNELS) >= MIN_PROGRAMS


@triton.jit
def _row(b, o_t, i: tl.constexpr):
    """Row ``i`` of a ``[BT, SG, BD]`` tile whose tokens sit in-thread -> ``[SG, BD]``: the select is constant per
    register and the sum adds ``-0.0`` (exact for every float), so this compiles to register picks."""
    return tl.sum(tl.where(o_t[:, None, None] == i, b, -0.0), axis=0)


@triton.jit
def _shifted_decayed_sum(e2, m2, v2, e1, m1, v1):
    """Combine of the reverse scan ``dh_t = c_t + a_{t+1} dh_{t+1}`` over unshifted factors ``a_t``. A segment of
    tokens ``[t0, t1]`` is ``(e, m, v)`` = (``a_{t0}``, ``prod_{t0 < r <= t1} a_r``, ``dh_{t0}`` from a zero
    carry); a leaf is ``(a_t, 1, c_t)``. A reverse scan accumulates from the end: the first operand (2) is the
    later segment, the second (1) the earlier. In-thread the ``e, m`` chains are dead code: one FMA per token."""
    return e1, m1 * e2 * m2, v1 + m1 * e2 * v2


@triton.jit
def _halve_lanes(p, o_l, BIT: tl.constexpr, N: tl.constexpr, SG: tl.constexpr, BD: tl.constexpr):
    """One step of a transposed sum over lanes: ``[N, SG, BD]`` (rows in-thread, lane ``l`` = channel) ->
    ``[N // 2, SG, BD]``. Lanes ``l`` and ``l ^ BIT`` pair up: each keeps half of its rows (odd or even, by
    ``l & BIT``) and adds the partner's copy of that half, one shuffle per kept row. After ``log2(N)`` steps
    (``BIT = N/2 .. 1``) lane ``l`` holds the sum over the ``N`` lanes of row ``bit_reverse(l)``: ``N - 1``
    shuffles and adds per thread, where a butterfly sum of every row takes ``N log2(N)`` of each."""
    q = tl.reshape(tl.permute(p, (2, 1, 0)), [BD, SG, N // 2, 2])
    even, odd = tl.split(q)  # [BD, SG, N // 2]
    hi = ((o_l & BIT) != 0)[:, None, None]
    keep = tl.where(hi, odd, even)
    send = tl.where(hi, even, odd)
    recv = tl.gather(send, (o_l ^ BIT)[:, None, None] + tl.zeros([BD, SG, N // 2], dtype=tl.int32), axis=0)
    return tl.permute(keep + recv, (2, 1, 0))


@triton.jit
def _lane_sums(p, o_l, SG: tl.constexpr, BD: tl.constexpr):
    """``[32, SG, BD]`` -> ``[SG, BD]``: lane ``l`` holds ``sum_lanes p[bit_reverse5(l)]`` (see :func:`_halve_lanes`;
    32 rows over 32 lanes)."""
    p = _halve_lanes(p, o_l, 16, 32, SG, BD)
    p = _halve_lanes(p, o_l, 8, 16, SG, BD)
    p = _halve_lanes(p, o_l, 4, 8, SG, BD)
    p = _halve_lanes(p, o_l, 2, 4, SG, BD)
    p = _halve_lanes(p, o_l, 1, 2, SG, BD)
    return tl.reshape(p, [SG, BD])


@triton.jit
def _bit_reverse5(i):
    """The 5-bit reversal of ``i`` (``0 <= i < 32``): the row whose sum lane ``i`` holds after :func:`_lane_sums`."""
    return ((i & 1) << 4) | ((i & 2) << 2) | (i & 4) | ((i & 8) >> 2) | ((i & 16) >> 4)


@triton.jit
def _public_offsets(i_n, o_n, o_d, Di: tl.constexpr, Ds: tl.constexpr):
    """``[SG, BD]`` offsets of states ``o_n`` x channels ``o_d`` of sequence ``i_n`` in a public ``[N, Di, Ds]``
    state (``h0, ht, dht, dh0``; the scratch states are transposed, ``[.., Ds, Di]``)."""
    return i_n * Di * Ds + o_d[None, :] * Ds + o_n[:, None]


@triton.jit
def _state_group(j, o_g, At, p_B, p_C, o_r, m_p, o_d, m_d, Di: tl.constexpr, Ds: tl.constexpr):
    """States ``j .. j + SG`` of a chunk: ``(o_n [SG], m_n, o_nd [SG, BD], m_nd, A [SG, BD], B, C [BT, SG])``
    (``A``, ``B``, ``C`` float32, 0 outside the masks)."""
    o_n = j + o_g
    m_n = o_n < Ds
    o_nd = o_n[:, None] * Di + o_d[None, :]
    m_nd = m_n[:, None] & m_d[None, :]
    b_A = tl.load(At + o_nd, mask=m_nd, other=0.0).to(tl.float32)
    m_pn = m_p[:, None] & m_n[None, :]
    b_B = tl.load(p_B + o_r[:, None] + o_n[None, :], mask=m_pn, other=0.0).to(tl.float32)
    b_C = tl.load(p_C + o_r[:, None] + o_n[None, :], mask=m_pn, other=0.0).to(tl.float32)
    return o_n, m_n, o_nd, m_nd, b_A, b_B, b_C


@lean_launch
@given_heuristics(HAS_D="D", HAS_Z="z", HAS_BIAS="dt_bias", USE_INITIAL="h0", STORE_FINAL="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(configs=_configs(), key=["Di", "Ds", "BT"])
@triton.jit(do_not_specialize=["T"])
def mamba_scan_fwd_kernel(
    x,
    dt,
    dt_bias,
    At,
    Bm,
    Cm,
    D,
    z,
    h0,
    h_in,
    ht,
    y,
    cu_seqlens,
    chunk_offsets,
    T,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    SG: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_INITIAL: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per sequence and block of ``BD`` channels, chunk after chunk: ``y = (C . h + D x) silu(z)`` (its dtype),
    the state entering every chunk -> ``h_in [chunks, Ds, Di]`` (float32, transposed) and the final state
    ``ht [N, Di, Ds]``. ``h0 [N, Di, Ds]``: the initial state."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    # one channel per lane (declared non-contiguous: 16-byte vector loads would spread the tokens over lanes)
    o_d = i_d * BD + tl.max_contiguous(tl.arange(0, BD), 1)  # [BD]
    m_d = o_d < Di
    o_t = tl.arange(0, BT)
    o_g = tl.arange(0, SG)
    for j in range(0, Ds, SG):
        o_n = j + o_g
        m_nd = (o_n < Ds)[:, None] & m_d[None, :]
        if USE_INITIAL:
            b_h0 = tl.load(h0 + _public_offsets(i_n, o_n, o_d, Di, Ds), mask=m_nd, other=0.0)
        else:
            b_h0 = tl.zeros([SG, BD], dtype=tl.float32)
        if NT > 0:
            tl.store(h_in + boh * Ds * Di + o_n[:, None] * Di + o_d[None, :], b_h0.to(tl.float32), mask=m_nd)
        elif STORE_FINAL:  # a sequence without tokens (varlen) passes its initial state through
            p_ht = ht + _public_offsets(i_n, o_n, o_d, Di, Ds)
            tl.store(p_ht, b_h0.to(ht.dtype.element_ty), mask=m_nd)
    for i_c in range(0, NT):
        o_p = i_c * BT + o_t  # [BT] positions in the sequence
        m_p = o_p < T_n
        b_x = _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)  # [BT, BD]
        b_dt, _ = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
        b_u = b_dt * b_x
        b_y3 = tl.zeros([BT, SG, BD], dtype=tl.float32)
        p_h = h_in + (boh + i_c) * Ds * Di  # this chunk's entering states; the next chunk's follow
        p_B, p_C, o_r = Bm + bos * Ds, Cm + bos * Ds, o_p * Ds
        for j in range(0, Ds, SG):
            o_n, m_n, o_nd, m_nd, b_A, b_B, b_C = _state_group(j, o_g, At, p_B, p_C, o_r, m_p, o_d, m_d, Di, Ds)
            b_hc = tl.load(p_h + o_nd, mask=m_nd, other=0.0)  # [SG, BD] the carried states
            b_a = tl.exp2(b_dt[:, None, :] * (b_A * LOG2E)[None, :, :])  # [BT, SG, BD]
            b_un = b_u[:, None, :] * b_B[:, :, None]
            b_un = tl.where(o_t[:, None, None] == 0, b_un + b_a * b_hc[None, :, :], b_un)
            _p, b_h = tl.associative_scan((b_a, b_un), axis=0, combine_fn=_decayed_sum)
            b_y3 += b_h * b_C[:, :, None]
            b_last = _row(b_h, o_t, BT - 1)
            if i_c + 1 < NT:
                tl.store(p_h + Ds * Di + o_nd, b_last, mask=m_nd)
            elif STORE_FINAL:
                p_ht = ht + _public_offsets(i_n, o_n, o_d, Di, Ds)
                tl.store(p_ht, b_last.to(ht.dtype.element_ty), mask=m_nd)
        b_y = tl.sum(b_y3, axis=1)  # [BT, BD] over the state groups
        _store_output(y, x, D, z, b_y, b_x, bos, o_p, m_p, o_d, m_d, Di, HAS_D, HAS_Z)


@lean_launch
@given_heuristics(
    HAS_D="D", HAS_Z="z", HAS_BIAS="dt_bias", USE_FINAL_GRAD="dht", STORE_INITIAL_GRAD="dh0", IS_VARLEN="cu_seqlens"
)
@triton.autotune(configs=_configs(), key=["Di", "Ds", "BT"])
@triton.jit(do_not_specialize=["T", "R"])
def mamba_scan_bwd_kernel(
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
    dht,
    f_carry,
    dx,
    ddt,
    dz,
    dA_acc,
    dB_part,
    dC_part,
    dD_acc,
    dbias_acc,
    dh0,
    cu_seqlens,
    chunk_offsets,
    T,
    R,
    Di: tl.constexpr,
    Ds: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    SG: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_FINAL_GRAD: tl.constexpr,
    STORE_INITIAL_GRAD: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Per sequence and channel block, chunk after chunk backwards in time, state group by state group: ``h_t``
    (forward scan from ``h_in``) and ``dh_t`` (reverse scan of ``C_t dy_t`` with the carry ``f = a dh`` of the
    chunk after), then with ``q_t = dh_t (h_t - u_t)``: ``dx, ddt, dz`` (their dtypes), ``dA_acc, dD_acc,
    dbias_acc`` (per sequence: ``[N, Ds, Di]``, ``[N, Di]``), ``dB_part, dC_part [Di / BD, R, Ds]`` (per channel
    block, ``R = B * T`` rows) and ``dh0 = a_0 dh_0 [N, Di, Ds]``. ``f_carry [N, Ds, Di]``: scratch."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    tl.static_assert(BT == 32 and BD == 32, "the lane sums pair 32 tokens with 32 lanes")
    o_l = tl.max_contiguous(tl.arange(0, BD), 1)  # [BD] lanes
    o_d = i_d * BD + o_l
    m_d = o_d < Di
    o_lt = _bit_reverse5(o_l)
    o_t = tl.arange(0, BT)
    o_g = tl.arange(0, SG)
    p_f = f_carry + i_n * Ds * Di
    p_dA = dA_acc + i_n * Ds * Di
    for j in range(0, Ds, SG):
        o_n = j + o_g
        o_nd = o_n[:, None] * Di + o_d[None, :]
        m_nd = (o_n < Ds)[:, None] & m_d[None, :]
        if USE_FINAL_GRAD:
            b_f = tl.load(dht + _public_offsets(i_n, o_n, o_d, Di, Ds), mask=m_nd, other=0.0)
        else:
            b_f = tl.zeros([SG, BD], dtype=tl.float32)
        tl.store(p_f + o_nd, b_f.to(tl.float32), mask=m_nd)
        tl.store(p_dA + o_nd, tl.zeros([SG, BD], dtype=tl.float32), mask=m_nd)
    b_dD = tl.zeros([BD], dtype=tl.float32)
    b_dbias = tl.zeros([BD], dtype=tl.float32)
    b_one = tl.full([BT, SG, BD], 1.0, dtype=tl.float32)
    p_dB = dB_part + (i_d * R + bos) * Ds
    p_dC = dC_part + (i_d * R + bos) * Ds
    for i_r in range(0, NT):
        i_c = NT - 1 - i_r
        o_p = i_c * BT + o_t
        m_p = o_p < T_n
        b_dt, _ = _load_dt(dt, dt_bias, bos, o_p, m_p, o_d, m_d, Di, HAS_BIAS, SOFTPLUS)
        b_u = b_dt * _load_tokens(x, bos, o_p, m_p, o_d, m_d, Di)
        b_dy = _load_tokens(do, bos, o_p, m_p, o_d, m_d, Di)
        if HAS_Z:
            b_dy *= _silu(_load_tokens(z, bos, o_p, m_p, o_d, m_d, Di))
            b_y3 = tl.zeros([BT, SG, BD], dtype=tl.float32)  # C . h, for dz
        b_sB3 = tl.zeros([BT, SG, BD], dtype=tl.float32)  # sum_n dh_t B_t
        b_sA3 = tl.zeros([BT, SG, BD], dtype=tl.float32)  # sum_n A q_t
        p_h = h_in + (boh + i_c) * Ds * Di
        p_B, p_C, o_r = Bm + bos * Ds, Cm + bos * Ds, o_p * Ds
        o_rt = (i_c * BT + o_lt) * Ds  # [BD] the row of B / C whose channel sums lane l ends with
        m_rt = i_c * BT + o_lt < T_n
        for j in range(0, Ds, SG):
            o_n, m_n, o_nd, m_nd, b_A, b_B, b_C = _state_group(j, o_g, At, p_B, p_C, o_r, m_p, o_d, m_d, Di, Ds)
            b_hc = tl.load(p_h + o_nd, mask=m_nd, other=0.0)  # [SG, BD]
            b_fc = tl.load(p_f + o_nd, mask=m_nd, other=0.0)  # [SG, BD] a dh at the next chunk's first token
            b_a = tl.exp2(b_dt[:, None, :] * (b_A * LOG2E)[None, :, :])  # [BT, SG, BD]
            b_un = b_u[:, None, :] * b_B[:, :, None]
            _p, b_h = tl.associative_scan(
                (b_a, tl.where(o_t[:, None, None] == 0, b_un + b_a * b_hc[None, :, :], b_un)),
                axis=0,
                combine_fn=_decayed_sum,
            )
            b_cn = b_dy[:, None, :] * b_C[:, :, None]
            b_cn = tl.where(o_t[:, None, None] == BT - 1, b_cn + b_fc[None, :, :], b_cn)
            _e, _m, b_dh = tl.associative_scan(
                (b_a, b_one, b_cn), axis=0, combine_fn=_shifted_decayed_sum, reverse=True
            )
            tl.store(p_f + o_nd, _row(b_a, o_t, 0) * _row(b_dh, o_t, 0), mask=m_nd)
            b_q = b_dh * (b_h - b_un)  # dh_t exp(dt_t A) h_{t-1}
            b_sB3 += b_dh * b_B[:, :, None]
            b_sA3 += b_q * b_A[None, :, :]
            if HAS_Z:
                b_y3 += b_h * b_C[:, :, None]
            b_dA = tl.load(p_dA + o_nd, mask=m_nd, other=0.0) + tl.sum(b_q * b_dt[:, None, :], axis=0)
            tl.store(p_dA + o_nd, b_dA, mask=m_nd)
            # dB_t = sum_d dh_t u_t, dC_t = sum_d dy_t h_t: lane l ends with token bit_reverse5(l)'s sums
            o_sum = o_rt[None, :] + o_n[:, None]  # [SG, BD]
            m_sum = m_rt[None, :] & m_n[:, None]
            tl.store(p_dB + o_sum, _lane_sums(b_dh * b_u[:, None, :], o_l, SG, BD), mask=m_sum)
            tl.store(p_dC + o_sum, _lane_sums(b_dy[:, None, :] * b_h, o_l, SG, BD), mask=m_sum)
        b_sB = tl.sum(b_sB3, axis=1)  # [BT, BD]
        b_sA = tl.sum(b_sA3, axis=1)
        if HAS_Z:
            b_y = tl.sum(b_y3, axis=1)
        else:
            b_y = b_sB  # not read without z
        b_sdD, b_sdbias = _store_input_grads(x, dt, dt_bias, D, z, do, dx, ddt, dz, b_sA, b_sB, b_y, b_dt, b_dy, bos,
                                             o_p, m_p, o_d, m_d, Di, SOFTPLUS, HAS_D, HAS_Z, HAS_BIAS)  # fmt: skip
        b_dD += b_sdD
        b_dbias += b_sdbias
    if HAS_D:
        tl.store(dD_acc + i_n * Di + o_d, b_dD, mask=m_d)
    if HAS_BIAS:
        tl.store(dbias_acc + i_n * Di + o_d, b_dbias, mask=m_d)
    if STORE_INITIAL_GRAD:
        for j in range(0, Ds, SG):
            o_n = j + o_g
            m_nd = (o_n < Ds)[:, None] & m_d[None, :]
            b_f = tl.load(p_f + o_n[:, None] * Di + o_d[None, :], mask=m_nd, other=0.0)
            tl.store(dh0 + _public_offsets(i_n, o_n, o_d, Di, Ds), b_f.to(dh0.dtype.element_ty), mask=m_nd)


# ----------------------------------------------------------------------------------------------- host side


def sequential_selective_scan_fwd(x, dt, A, Bm, Cm, D, z, dt_bias, softplus, h0, want_final, layout):
    """:func:`fla.ops.mamba.scan.chunk_selective_scan_fwd` in one pass: ``(y, ht or None, h_in)`` with the same
    shapes, dtypes and meaning."""
    Bsz, T, Di = x.shape
    Ds = A.shape[1]
    At = A.t().contiguous()  # [Ds, Di]: a state's channels are contiguous
    h_in = empty(layout.batch * layout.row_chunks, Ds, Di, dtype=torch.float32, device=x.device)
    ht = empty(layout.num_seqs, Di, Ds, dtype=torch.float32, device=x.device) if want_final else None
    y = empty(Bsz, T, Di, dtype=x.dtype, device=x.device)
    mamba_scan_fwd_kernel[(cdiv(Di, CHANNELS), layout.num_seqs)](
        x, dt, dt_bias, At, Bm, Cm, D, z, h0, h_in, ht, y, layout.cu_seqlens, layout.chunk_offsets, T,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=CHANNELS, SOFTPLUS=softplus,
    )  # fmt: skip
    return y, ht, h_in


def sequential_selective_scan_bwd(x, dt, A, Bm, Cm, D, z, dt_bias, softplus, h_in, do, dht, want_dh0, layout):
    """:func:`fla.ops.mamba.scan.chunk_selective_scan_bwd` in one pass: ``(dx, ddt, dA, dB, dC, dD, dz,
    ddt_bias, dh0)`` with the same shapes, dtypes and meaning."""
    Bsz, T, Di = x.shape
    Ds = A.shape[1]
    N, ND = layout.num_seqs, cdiv(Di, CHANNELS)
    At = A.t().contiguous()
    f_carry = empty(N, Ds, Di, dtype=torch.float32, device=x.device)
    dA_acc = empty(N, Ds, Di, dtype=torch.float32, device=x.device)
    dx = empty(Bsz, T, Di, dtype=x.dtype, device=x.device)
    ddt = empty(Bsz, T, Di, dtype=dt.dtype, device=x.device)
    dz = empty(Bsz, T, Di, dtype=z.dtype, device=x.device) if z is not None else None
    dB_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    dC_part = empty(ND, Bsz, T, Ds, dtype=torch.float32, device=x.device)
    dD_acc = empty(N, Di, dtype=torch.float32, device=x.device) if D is not None else None
    dbias_acc = empty(N, Di, dtype=torch.float32, device=x.device) if dt_bias is not None else None
    dh0 = empty(N, Di, Ds, dtype=torch.float32, device=x.device) if want_dh0 else None
    mamba_scan_bwd_kernel[(ND, N)](
        x, dt, dt_bias, At, Bm, Cm, D, z, do, h_in, dht, f_carry, dx, ddt, dz, dA_acc, dB_part, dC_part, dD_acc,
        dbias_acc, dh0, layout.cu_seqlens, layout.chunk_offsets, T, Bsz * T,
        Di=Di, Ds=Ds, BT=layout.chunk_size, BD=CHANNELS, SOFTPLUS=softplus,
    )  # fmt: skip
    dD = dD_acc.sum(0) if D is not None else None
    ddt_bias = dbias_acc.sum(0) if dt_bias is not None else None
    return dx, ddt, dA_acc.sum(0).t(), dB_part.sum(0), dC_part.sum(0), dD, dz, ddt_bias, dh0
