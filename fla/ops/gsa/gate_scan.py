"""ABC's additive slot gate in Triton: the running log-sum-exp of the slot logits, forward and backward.

Columns are the ``C = H * M`` (head, slot) pairs of ``s [B, T, H, M]``; a program owns ``BC`` columns of one
sequence and walks its ``BT``-token tiles in order (forward) or in reverse (backward), carrying one value per
column between tiles. Inside a tile the prefixes come from ``tl.associative_scan``. The maths (see
:mod:`fla.ops.gsa.gate`)::

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

from fla.ops.common.indexing import token_bounds
from fla.ops.common.tuning import given_heuristics
from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

BT = 64  # tokens per tile


@triton.jit
def _logaddexp(a, b):
    """``log(exp(a) + exp(b))``, ``-inf`` when both are ``-inf``."""
    m = tl.maximum(a, b)
    return tl.where(m == float("-inf"), m, m + tl.log(1.0 + tl.exp(tl.minimum(a, b) - m)))


@triton.jit
def _decayed_sum(a1, h1, a2, h2):
    """Reverse-scan combine: ``h = a2 h1 + h2`` (segment 1 later in time than 2), factors multiply."""
    return a1 * a2, a2 * h1 + h2


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_fwd_kernel(
    s, z0, s_out, g, z, zT, cu_seqlens, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """``s [.., C]`` -> ``s_out`` (s' in s's dtype), ``g`` and ``z`` (float32), ``zT [N, C]`` (float32)."""
    i_c, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC]
    m_c = o_c < C
    o_r = tl.arange(0, BT)  # [BT] rows of a tile
    if USE_Z0:
        b_z = tl.load(z0 + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)  # [BC] the carry
    else:
        b_z = tl.full([BC], float("-inf"), dtype=tl.float32)
    for i_t in range(0, tl.cdiv(T_n, BT)):
        o_t = i_t * BT + o_r  # [BT] positions in the sequence
        m_tc = (o_t < T_n)[:, None] & m_c[None, :]
        p = (bos + o_t[:, None]) * C + o_c[None, :]  # [BT, BC]
        b_s = tl.load(s + p, mask=m_tc, other=float("-inf")).to(tl.float32)
        # the row before each row of the tile (the first row's comes from the carry)
        b_sp = tl.load(s + p - C, mask=m_tc & (o_r > 0)[:, None], other=float("-inf")).to(tl.float32)
        b_zt = _logaddexp(b_z[None, :], tl.associative_scan(b_s, axis=0, combine_fn=_logaddexp))  # [BT, BC]
        b_zp = _logaddexp(b_z[None, :], tl.associative_scan(b_sp, axis=0, combine_fn=_logaddexp))
        b_zp = tl.where(b_zp == float("-inf"), b_zt, b_zp)  # the first token without z0: g_0 = 0
        tl.store(s_out + p, tl.exp(b_s - b_zt).to(s_out.dtype.element_ty), mask=m_tc)
        tl.store(g + p, b_zp - b_zt, mask=m_tc)
        tl.store(z + p, b_zt, mask=m_tc)
        b_z = tl.max(b_zt, axis=0)  # z never decreases and rows past the end keep it: the last row
    tl.store(zT + i_n * C + o_c, b_z, mask=m_c)


@lean_launch
@given_heuristics(USE_Z0="z0", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def additive_gate_bwd_kernel(
    s_out, z, z0, ds_out, dg, dzT, ds, dz0, cu_seqlens, T, C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
    USE_Z0: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """``ds`` (s's dtype) and ``dz0`` (float32) from ``ds'``, ``dg`` and ``dz_T``; tiles from the last."""
    i_c, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC]
    m_c = o_c < C
    o_r = tl.arange(0, BT)
    b_dzT = tl.load(dzT + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)  # [BC]
    b_q = tl.zeros([BC], dtype=tl.float32)  # Q at the first row of the tile after this one
    b_zn = tl.zeros([BC], dtype=tl.float32)  # z there
    NT = tl.cdiv(T_n, BT)
    for i_i in range(0, NT):
        i_t = NT - 1 - i_i
        o_t = i_t * BT + o_r  # [BT]
        m_t = o_t < T_n
        m_tc = m_t[:, None] & m_c[None, :]
        p = (bos + o_t[:, None]) * C + o_c[None, :]  # [BT, BC]
        m_next = (o_t + 1 < T_n)[:, None] & m_c[None, :]  # the row after exists in the sequence
        b_sn = tl.load(s_out + p, mask=m_tc, other=0.0).to(tl.float32)  # s'
        b_dsn = tl.load(ds_out + p, mask=m_tc, other=0.0).to(tl.float32)
        b_z = tl.load(z + p, mask=m_tc, other=0.0)
        b_z1 = tl.load(z + p + C, mask=m_next, other=0.0)  # z_{t+1}
        b_dg = tl.load(dg + p, mask=m_tc, other=0.0).to(tl.float32)
        b_dg1 = tl.load(dg + p + C, mask=m_next, other=0.0).to(tl.float32)  # dg_{t+1}
        if not USE_Z0:
            b_dg = tl.where((o_t == 0)[:, None], 0.0, b_dg)  # g_0 = 0 does not depend on z_0
        b_u = -b_dsn * b_sn - b_dg + b_dg1 + tl.where((o_t == T_n - 1)[:, None], b_dzT[None, :], 0.0)
        b_u = tl.where(m_tc, b_u, 0.0)
        # in-tile factors exp(z_t - z_{t+1}); the tile's last row links to the next tile through the carry below
        b_a = tl.where(m_next & (o_r < BT - 1)[:, None], tl.exp(b_z - b_z1), 0.0)
        _, b_Q = tl.associative_scan((b_a, b_u), axis=0, combine_fn=_decayed_sum, reverse=True)
        b_Q += tl.where(m_tc & (i_i > 0), tl.exp(b_z - b_zn[None, :]), 0.0) * b_q[None, :]
        tl.store(ds + p, (b_sn * (b_dsn + b_Q)).to(ds.dtype.element_ty), mask=m_tc)
        first = (o_r == 0)[:, None]
        b_q = tl.sum(tl.where(first, b_Q, 0.0), axis=0)
        b_zn = tl.sum(tl.where(first, b_z, 0.0), axis=0)
    if USE_Z0:
        b_z0 = tl.load(z0 + i_n * C + o_c, mask=m_c, other=0.0).to(tl.float32)
        m_some = (o_c * 0 + T_n) > 0  # [BC]: the sequence has tokens
        b_dg0 = tl.load(dg + bos * C + o_c, mask=m_c & m_some, other=0.0).to(tl.float32)
        b_dz0 = b_dg0 + tl.where(m_some, tl.exp(b_z0 - b_zn) * b_q, b_dzT)  # an empty sequence passes dz_T on
        tl.store(dz0 + i_n * C + o_c, b_dz0, mask=m_c)


def _grid(C: int, N: int) -> tuple[tuple[int, int], int]:
    BC = min(32, max(16, next_power_of_2(C)))
    return (cdiv(C, BC), N), BC


class AdditiveGateFunction(torch.autograd.Function):
    @staticmethod
    @contiguous
    def forward(ctx, s, z0, cu_seqlens):
        B, T, H, M = s.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        s_out = empty(B, T, H, M, dtype=s.dtype, device=s.device)
        g, z = (empty(B, T, H, M, dtype=torch.float32, device=s.device) for _ in range(2))
        zT = empty(N, H, M, dtype=torch.float32, device=s.device)
        grid, BC = _grid(H * M, N)
        additive_gate_fwd_kernel[grid](s, z0, s_out, g, z, zT, cu_seqlens, T, C=H * M, BT=BT, BC=BC)
        ctx.save_for_backward(s_out, z, z0, cu_seqlens)
        ctx.s_dtype = s.dtype
        return s_out, g, zT

    @staticmethod
    @contiguous
    def backward(ctx, ds_out, dg, dzT):
        s_out, z, z0, cu_seqlens = ctx.saved_tensors
        B, T, H, M = s_out.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        ds_out = torch.zeros_like(s_out) if ds_out is None else ds_out
        dg = torch.zeros_like(z) if dg is None else dg
        dzT = torch.zeros(N, H, M, dtype=torch.float32, device=z.device) if dzT is None else dzT
        ds = empty(B, T, H, M, dtype=ctx.s_dtype, device=z.device)
        dz0 = None if z0 is None else empty(N, H, M, dtype=torch.float32, device=z.device)
        grid, BC = _grid(H * M, N)
        additive_gate_bwd_kernel[grid](
            s_out, z, z0, ds_out, dg, dzT, ds, dz0, cu_seqlens, T, C=H * M, BT=BT, BC=BC
        )  # fmt: skip
        return ds, (None if dz0 is None else dz0.to(z0.dtype)), None


def additive_gate_triton(
    s: torch.Tensor, cu_seqlens: torch.Tensor | None = None, z0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fla.ops.gsa.gate.additive_gate` in Triton: ``s [B, T, H, M]`` -> ``(s' [B, T, H, M]`` in
    ``s.dtype``, ``g [B, T, H, M]`` float32, ``z [N, H, M]`` float32``)``; differentiable in ``s`` and ``z0``."""
    return AdditiveGateFunction.apply(s, z0, cu_seqlens)
