"""ABC's additive slot gate in Triton: the running log-sum-exp of the slot logits, forward and backward.

Columns are the ``C = H * M`` (head, slot) pairs of ``s [B, T, H, M]``, tokens in ``BT``-token tiles. Every pass is
tile-parallel with one short serial pass over each sequence's tiles in between (a walk over all of ``T`` by one
program per column block left most of the GPU idle): forward, the tiles' log-sum-exps, then the value of ``z``
entering each tile (serial, one ``[BC]`` step per tile), then each tile's rows in order (a log-sum-exp step per
token in each column's thread, :func:`_lse_push`); backward, each tile's own ``Q`` at its first row, then ``Q``
entering each tile from the ones after (serial: the in-tile factors ``exp(z_t - z_{t+1})`` telescope to
``exp(z_first - z_next first)``), then each tile's rows from its last with that carry. The per-tile passes walk rows
in each column's thread: an in-tile ``tl.associative_scan`` spans threads and warps (shuffles, shared memory,
barriers) and ran 3-6x the instructions.
The maths (see :mod:`fla.ops.gsa.gate`)::

    z_t = logaddexp(z_{t-1}, s_t)   (z_{-1} = z0, or -inf)     s'_t = exp(s_t - z_t)     g_t = z_{t-1} - z_t

with ``g_0 = 0`` when no ``z0`` is given. Backward, with ``dZ_t`` the total gradient reaching ``z_t``::

    dZ_t = -ds'_t s'_t - dg_t [t > 0 or z0] + dg_{t+1} [t+1 < T] + dz_T [t = T-1]
    Q_t  = dZ_t + exp(z_t - z_{t+1}) Q_{t+1}        (a reverse scan with factors <= 1: z never decreases)
    ds_t = s'_t (ds'_t + Q_t),      dz0 = dg_0 + exp(z0 - z_0) Q_0

since ``dz_t / ds_j = exp(s_j - z_t)`` for ``j <= t`` and ``sum_{t >= j} dZ_t exp(s_j - z_t) = s'_j Q_j``.
The forward keeps ``z`` (float32) for the backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import sequence_bounds, sequence_chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import given_heuristics
from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

BT = 64  # tokens per tile


@triton.jit
def _lse_push(m, c, x):
    """One term into a running log-sum-exp held as ``(m, c)``: ``z = m + log(c)`` with ``m`` the running maximum
    (``-inf``: nothing yet) and ``c >= 1`` the sum of ``exp(term - m)``. ``z`` formed afresh from them at each step
    is exact to float32 rounding; a chain ``z <- logaddexp(z, x)`` instead rounds ``z`` (~20 at T = 2000) at every
    token, and the errors add up: ~1e-5 at T = 2000, the float32 error of every output after it."""
    m_new = tl.maximum(m, x)
    # one exponential a step: of the smaller of (m, x) against the larger (0 when either is -inf)
    e = tl.exp(tl.where(m_new == float("-inf"), float("-inf"), tl.minimum(m, x) - m_new))
    return m_new, tl.where(x > m, c * e + 1.0, c + e)


@triton.jit
def _lse_value(m, c):
    """``z = m + log(c)`` of a running log-sum-exp (:func:`_lse_push`), ``-inf`` for no terms."""
    return tl.where(m == float("-inf"), m, m + tl.log(c))


@triton.jit
def _tile(cu_seqlens, chunk_indices, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, IS_VARLEN: tl.constexpr):
    """The per-tile kernels' program (grid ``(C / BC, chunks, B)``): ``(i_n, bos, T_n, i_tc, i_ch, o_c, m_c)`` =
    the sequence, its first token and length, the tile's chunk index in it and overall, its ``[BC]`` columns and
    their mask."""
    i_c, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_n, bos, T_n, i_tc, i_ch = sequence_chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC]
    return i_n, bos, T_n, i_tc, i_ch, o_c, o_c < C


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_lse_kernel(
    s, lse, cu_seqlens, chunk_indices, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Forward, per tile: ``lse [chunks, C]`` = log-sum-exp of the tile's ``s`` rows (``-inf`` for none)."""
    _, bos, T_n, i_tc, i_ch, o_c, m_c = _tile(cu_seqlens, chunk_indices, T, C, BT, BC, IS_VARLEN)
    o_t = i_tc * BT + tl.arange(0, BT)  # [BT]
    m_tc = (o_t < T_n)[:, None] & m_c[None, :]
    b_s = tl.load(s + (bos + o_t[:, None]) * C + o_c[None, :], mask=m_tc, other=float("-inf")).to(tl.float32)
    b_m = tl.max(b_s, axis=0)  # [BC]
    b_e = tl.exp(tl.where(b_s == float("-inf"), float("-inf"), b_s - b_m[None, :]))  # no -inf - -inf
    b_lse = tl.where(b_m == float("-inf"), b_m, b_m + tl.log(tl.sum(b_e, axis=0)))
    tl.store(lse + i_ch * C + o_c, b_lse, mask=m_c)


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_carry_kernel(
    lse, z0, z_in, zT, cu_seqlens, chunk_offsets, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Forward, per sequence, tile after tile: ``z_in [chunks, C]`` = ``z`` before each tile, ``zT [N, C]``."""
    i_c, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC]
    m_c = o_c < C
    if USE_Z0:
        b_m = tl.load(z0 + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)  # [BC] the carry
    else:
        b_m = tl.full([BC], float("-inf"), dtype=tl.float32)
    b_c = tl.full([BC], 1.0, dtype=tl.float32)  # z = m + log(c) (_lse_push)
    for i_t in range(0, NT):
        tl.store(z_in + (boh + i_t) * C + o_c, _lse_value(b_m, b_c), mask=m_c)
        b_m, b_c = _lse_push(b_m, b_c, tl.load(lse + (boh + i_t) * C + o_c, mask=m_c, other=float("-inf")))
    tl.store(zT + i_n * C + o_c, _lse_value(b_m, b_c), mask=m_c)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_fwd_kernel(
    s, z_in, s_out, g, z, cu_seqlens, chunk_indices, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Forward, per tile: ``s_out`` (s' in s's dtype), ``g`` and ``z`` (float32) from the carry ``z_in``, row after
    row: each column's ``z`` is one :func:`_lse_push` per token in its thread. (An in-tile ``tl.associative_scan`` over
    the rows, which spans threads and warps, ran 316 instructions per element on sm_90 and was 1.0 of LightNet's
    1.78 ms forward on an H100; this loop runs ~65 (52 with the rounded logaddexp chain) and reads each row as one
    load of ``BC`` columns.)"""
    _, bos, T_n, i_tc, i_ch, o_c, m_c = _tile(cu_seqlens, chunk_indices, T, C, BT, BC, IS_VARLEN)
    b_z = tl.load(z_in + i_ch * C + o_c, mask=m_c, other=float("-inf"))  # [BC] z before the tile
    b_m, b_c = b_z, tl.full([BC], 1.0, dtype=tl.float32)  # z = m + log(c) (_lse_push)
    t0 = i_tc * BT
    for t in range(t0, tl.minimum(t0 + BT, T_n)):
        p = (bos + t) * C + o_c  # [BC]
        b_s = tl.load(s + p, mask=m_c, other=float("-inf")).to(tl.float32)
        b_m, b_c = _lse_push(b_m, b_c, b_s)
        b_zt = _lse_value(b_m, b_c)
        tl.store(s_out + p, tl.exp(b_s - b_zt).to(s_out.dtype.element_ty), mask=m_c)
        tl.store(g + p, tl.where(b_z == float("-inf"), 0.0, b_z - b_zt), mask=m_c)  # the first token without z0: 0
        tl.store(z + p, b_zt, mask=m_c)
        b_z = b_zt


@triton.jit
def _reverse_rows(s_out, z, ds_out, dg, dzT, ds, bos, T_n, t0, o_c, m_c, b_q, b_zn, C: tl.constexpr, BT: tl.constexpr,
                  USE_Z0: tl.constexpr, STORE_DS: tl.constexpr):  # fmt: skip
    """Backward, one tile's rows from its last: ``Q_t = dZ_t + exp(z_t - z_{t+1}) Q_{t+1}`` per column in its thread,
    from ``b_q`` = ``Q`` at the row after the tile (``z`` there: ``b_zn``; ``b_q = 0, b_zn = +inf`` for none); with
    ``STORE_DS``, ``ds_t = s'_t (ds'_t + Q_t)`` (s's dtype). Returns ``Q`` at the tile's first row."""
    t_end = tl.minimum(t0 + BT, T_n)
    b_dzT = tl.load(dzT + o_c, mask=m_c, other=0.0).to(tl.float32)  # [BC] (dzT: this sequence's row)
    m_after = m_c & (0 * o_c + t_end < T_n)  # [BC]: a row follows the tile (a vector: the interpreter's masks)
    b_dg1 = tl.load(dg + (bos + t_end) * C + o_c, mask=m_after, other=0.0).to(tl.float32)  # dg_{t+1}
    for i in range(0, t_end - t0):
        t = t_end - 1 - i
        p = (bos + t) * C + o_c  # [BC]
        b_sn = tl.load(s_out + p, mask=m_c, other=0.0).to(tl.float32)  # s'
        b_dsn = tl.load(ds_out + p, mask=m_c, other=0.0).to(tl.float32)
        b_z = tl.load(z + p, mask=m_c, other=0.0)
        b_dg = tl.load(dg + p, mask=m_c, other=0.0).to(tl.float32)
        b_u = -b_dsn * b_sn + b_dg1 + tl.where(t == T_n - 1, b_dzT, 0.0)
        if USE_Z0:
            b_u -= b_dg
        else:  # g_0 = 0 does not depend on z_0
            b_u -= tl.where(t == 0, 0.0, b_dg)
        b_q = b_u + tl.exp(b_z - b_zn) * b_q
        if STORE_DS:
            tl.store(ds + p, (b_sn * (b_dsn + b_q)).to(ds.dtype.element_ty), mask=m_c)
        b_zn, b_dg1 = b_z, b_dg
    return b_q


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_bwd_local_kernel(
    s_out, z, z0, ds_out, dg, dzT, q_first, cu_seqlens, chunk_indices, T, C: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr, USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Backward, per tile: ``q_first [chunks, C]`` = the tile's own ``Q`` (nothing carried in) at its first row."""
    i_n, bos, T_n, i_tc, i_ch, o_c, m_c = _tile(cu_seqlens, chunk_indices, T, C, BT, BC, IS_VARLEN)  # i_n: dz_T's row
    b_q = _reverse_rows(s_out, z, ds_out, dg, dzT + i_n * C, q_first, bos, T_n, i_tc * BT, o_c, m_c,
                        tl.zeros([BC], dtype=tl.float32), tl.full([BC], float("inf"), dtype=tl.float32), C, BT, USE_Z0,
                        False)  # fmt: skip
    tl.store(q_first + i_ch * C + o_c, b_q, mask=m_c)


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_bwd_carry_kernel(
    q_first, z, z0, dg, dzT, q_next, dz0, cu_seqlens, chunk_offsets, T, C: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr, USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Backward, per sequence, from its last tile: ``q_next [chunks, C]`` = ``Q`` at the first row of the tile
    after each tile (0 after the last), by ``Q_first(c) = q_first(c) + exp(z_first(c) - z_first(c+1)) Q_first(c+1)``
    (the in-tile factors telescope); then ``dz0``."""
    i_c, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC]
    m_c = o_c < C
    b_q = tl.zeros([BC], dtype=tl.float32)  # Q at the first row of the tile after this one
    b_zn = tl.zeros([BC], dtype=tl.float32)  # z there
    for i_i in range(0, NT):
        i_t = NT - 1 - i_i
        tl.store(q_next + (boh + i_t) * C + o_c, b_q, mask=m_c)
        b_zf = tl.load(z + (bos + i_t * BT) * C + o_c, mask=m_c, other=0.0)  # z at this tile's first row
        b_q = tl.load(q_first + (boh + i_t) * C + o_c, mask=m_c, other=0.0) + tl.where(
            i_i > 0, tl.exp(b_zf - b_zn) * b_q, 0.0
        )
        b_zn = b_zf
    if USE_Z0:
        b_dzT = tl.load(dzT + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)
        b_z0 = tl.load(z0 + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)
        m_some = (o_c * 0 + T_n) > 0  # [BC]: the sequence has tokens
        b_dg0 = tl.load(dg + bos * C + o_c, mask=m_c & m_some, other=0.0).to(tl.float32)
        b_dz0 = b_dg0 + tl.where(m_some, tl.exp(b_z0 - b_zn) * b_q, b_dzT)  # an empty sequence passes dz_T on
        tl.store(dz0 + i_n * C + o_c, b_dz0, mask=m_c)


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_bwd_kernel(
    s_out, z, z0, ds_out, dg, dzT, q_next, ds, cu_seqlens, chunk_indices, T, C: tl.constexpr, BT: tl.constexpr,
    BC: tl.constexpr, USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Backward, per tile: ``Q`` from the row after the tile (``q_next``, 0 after the sequence's last tile) through
    its rows, and ``ds = s' (ds' + Q)`` in s's dtype."""
    i_n, bos, T_n, i_tc, i_ch, o_c, m_c = _tile(cu_seqlens, chunk_indices, T, C, BT, BC, IS_VARLEN)  # i_n: dz_T's row
    t0 = i_tc * BT
    follows = 0 * o_c + t0 + BT < T_n  # [BC]: a tile follows in this sequence (a vector: the interpreter's masks)
    b_q = tl.load(q_next + i_ch * C + o_c, mask=m_c & follows, other=0.0)
    b_zn = tl.load(z + (bos + t0 + BT) * C + o_c, mask=m_c & follows, other=float("inf"))  # z at its first row
    _reverse_rows(s_out, z, ds_out, dg, dzT + i_n * C, ds, bos, T_n, t0, o_c, m_c, b_q, b_zn, C, BT, USE_Z0, True)


def _block(C: int) -> int:
    return min(32, max(16, next_power_of_2(C)))


def _row_walks(C: int, layout: ChunkLayout) -> tuple[tuple[int, int, int], dict]:
    """Grid and launch settings of the per-tile row walks (the forward and both per-tile backward passes): up to 512
    columns a program, 128 per warp (4 per thread), so that a row is one wide load and each thread carries a few
    independent chains."""
    BR = min(512, max(32, next_power_of_2(C)))
    return (cdiv(C, BR), layout.row_chunks, layout.batch), {"BC": BR, "num_warps": max(1, BR // 128)}


class AdditiveGateFunction(torch.autograd.Function):
    @staticmethod
    @contiguous
    def forward(ctx, s, z0, cu_seqlens):
        B, T, H, M = s.shape
        C, BC = H * M, _block(H * M)
        layout = ChunkLayout.build(s, cu_seqlens, BT)
        NC = layout.batch * layout.row_chunks
        s_out = empty(B, T, H, M, dtype=s.dtype, device=s.device)
        g, z = (empty(B, T, H, M, dtype=torch.float32, device=s.device) for _ in range(2))
        zT = empty(layout.num_seqs, H, M, dtype=torch.float32, device=s.device)
        lse, z_in = (empty(NC, C, dtype=torch.float32, device=s.device) for _ in range(2))
        tiles = (cdiv(C, BC), layout.row_chunks, layout.batch)
        cu, idx = layout.cu_seqlens, layout.chunk_indices
        additive_gate_lse_kernel[tiles](s, lse, cu, idx, T, C=C, BT=BT, BC=BC)
        additive_gate_carry_kernel[(cdiv(C, BC), layout.num_seqs)](
            lse, z0, z_in, zT, cu, layout.chunk_offsets, T, C=C, BT=BT, BC=BC
        )  # fmt: skip
        rows, walk = _row_walks(C, layout)
        additive_gate_fwd_kernel[rows](s, z_in, s_out, g, z, cu, idx, T, C=C, BT=BT, **walk)
        ctx.save_for_backward(s_out, z, z0)
        ctx.s_dtype, ctx.layout = s.dtype, layout
        return s_out, g, zT

    @staticmethod
    @contiguous
    def backward(ctx, ds_out, dg, dzT):
        s_out, z, z0 = ctx.saved_tensors
        layout = ctx.layout
        B, T, H, M = s_out.shape
        C, BC = H * M, _block(H * M)
        NC = layout.batch * layout.row_chunks
        ds_out = torch.zeros_like(s_out) if ds_out is None else ds_out
        dg = torch.zeros_like(z) if dg is None else dg
        dzT = torch.zeros(layout.num_seqs, H, M, dtype=torch.float32, device=z.device) if dzT is None else dzT
        ds = empty(B, T, H, M, dtype=ctx.s_dtype, device=z.device)
        dz0 = None if z0 is None else empty(layout.num_seqs, H, M, dtype=torch.float32, device=z.device)
        q_first, q_next = (empty(NC, C, dtype=torch.float32, device=z.device) for _ in range(2))
        cu, idx = layout.cu_seqlens, layout.chunk_indices
        rows, walk = _row_walks(C, layout)
        additive_gate_bwd_local_kernel[rows](s_out, z, z0, ds_out, dg, dzT, q_first, cu, idx, T, C=C, BT=BT, **walk)
        additive_gate_bwd_carry_kernel[(cdiv(C, BC), layout.num_seqs)](
            q_first, z, z0, dg, dzT, q_next, dz0, cu, layout.chunk_offsets, T, C=C, BT=BT, BC=BC
        )  # fmt: skip
        additive_gate_bwd_kernel[rows](s_out, z, z0, ds_out, dg, dzT, q_next, ds, cu, idx, T, C=C, BT=BT, **walk)
        return ds, (None if dz0 is None else dz0.to(z0.dtype)), None


def additive_gate_triton(
    s: torch.Tensor, cu_seqlens: torch.Tensor | None = None, z0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fla.ops.gsa.gate.additive_gate` in Triton: ``s [B, T, H, M]`` -> ``(s' [B, T, H, M]`` in
    ``s.dtype``, ``g [B, T, H, M]`` float32, ``z [N, H, M]`` float32``)``; differentiable in ``s`` and ``z0``."""
    return AdditiveGateFunction.apply(s, z0, cu_seqlens)
