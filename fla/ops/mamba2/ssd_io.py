"""The SSD's element-wise input and output stages around the simple-GLA core, fused (Triton, forward and backward).

    v = x * dt                 x [B, T, H, P], dt [B, T, H] (float32)    -> v in x.dtype
    o = y + D x                y, x [B, T, H, P], D [H] or [H, P]        -> o in x.dtype

In PyTorch each is several passes over ``[B, T, H, P]`` with float32 temporaries (cast, multiply, cast back; the
same again in the backward), which cost Mamba2 about as much as the scan itself at bf16. Here each direction is one
pass with float32 math in registers:

    value backward:  dx = dv * dt,  ddt = sum_P dv * x          (ddt float32, one value per row)
    skip backward:   dy = do,  dx = do * D,  dD = sum_{B,T} do * x    (per program partial sums, added on the host)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

ROWS_PER_PROGRAM = 32


@lean_launch
@triton.jit
def ssd_value_fwd_kernel(x, dt, v, R, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr):
    """``v[r] = x[r] * dt[r]`` over rows ``r`` of ``x [R, P]`` (``R = B*T*H``), ``dt [R]``."""
    i_r = tl.program_id(0).to(tl.int64)
    o_r = i_r * BR + tl.arange(0, BR)  # [BR]
    o_p = tl.arange(0, BP)  # [BP]
    m_r = o_r < R
    m_rp = m_r[:, None] & (o_p < P)[None, :]
    p_x = o_r[:, None] * P + o_p[None, :]  # [BR, BP]
    b_x = tl.load(x + p_x, mask=m_rp, other=0.0).to(tl.float32)
    b_dt = tl.load(dt + o_r, mask=m_r, other=0.0).to(tl.float32)  # [BR]
    tl.store(v + p_x, (b_x * b_dt[:, None]).to(v.dtype.element_ty), mask=m_rp)


@lean_launch
@triton.jit
def ssd_value_bwd_kernel(x, dt, dv, dx, ddt, R, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr):
    """``dx = dv * dt`` (x's dtype) and ``ddt = sum_P dv * x`` (float32)."""
    i_r = tl.program_id(0).to(tl.int64)
    o_r = i_r * BR + tl.arange(0, BR)  # [BR]
    o_p = tl.arange(0, BP)  # [BP]
    m_r = o_r < R
    m_rp = m_r[:, None] & (o_p < P)[None, :]
    p_x = o_r[:, None] * P + o_p[None, :]  # [BR, BP]
    b_x = tl.load(x + p_x, mask=m_rp, other=0.0).to(tl.float32)
    b_dv = tl.load(dv + p_x, mask=m_rp, other=0.0).to(tl.float32)
    b_dt = tl.load(dt + o_r, mask=m_r, other=0.0).to(tl.float32)  # [BR]
    tl.store(dx + p_x, (b_dv * b_dt[:, None]).to(dx.dtype.element_ty), mask=m_rp)
    tl.store(ddt + o_r, tl.sum(b_dv * b_x, axis=1), mask=m_r)


@triton.jit
def _skip_tile(D, i_n, i_h, N, H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr,
               D_PER_CHANNEL: tl.constexpr):  # fmt: skip
    """Offsets ``[BR, BP]`` of head ``i_h`` in rows ``i_n * BR ...`` of a ``[N, H, P]`` tensor, their mask, and
    the head's ``D`` row ``[BP]`` (float32)."""
    o_n = i_n * BR + tl.arange(0, BR)  # [BR] tokens (B*T flattened)
    o_p = tl.arange(0, BP)  # [BP]
    m_p = o_p < P
    m_np = (o_n < N)[:, None] & m_p[None, :]
    p_x = (o_n[:, None] * H + i_h) * P + o_p[None, :]  # [BR, BP]
    if D_PER_CHANNEL:
        b_D = tl.load(D + i_h * P + o_p, mask=m_p, other=0.0).to(tl.float32)  # [BP]
    else:
        b_D = tl.load(D + i_h + o_p * 0).to(tl.float32)  # [BP], one value
    return p_x, m_np, b_D


@lean_launch
@triton.jit
def ssd_skip_fwd_kernel(
    y, x, D, o, N, H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr, D_PER_CHANNEL: tl.constexpr
):
    """``o = y + D x`` for head ``program_id(1)`` of ``[N, H, P]`` tensors (``N = B*T``)."""
    i_n, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    p_x, m_np, b_D = _skip_tile(D, i_n, i_h, N, H, P, BR, BP, D_PER_CHANNEL)
    b_x = tl.load(x + p_x, mask=m_np, other=0.0).to(tl.float32)
    b_y = tl.load(y + p_x, mask=m_np, other=0.0).to(tl.float32)
    tl.store(o + p_x, (b_y + b_D[None, :] * b_x).to(o.dtype.element_ty), mask=m_np)


@lean_launch
@triton.jit
def ssd_skip_bwd_kernel(
    x, D, do, dx, dD, N, H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr,
    D_PER_CHANNEL: tl.constexpr,
):  # fmt: skip
    """``dx = do * D`` and this program's partial ``dD[i_n, h, :] = sum_rows do * x`` (float32 ``[NB, H, P]``)."""
    i_n, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    p_x, m_np, b_D = _skip_tile(D, i_n, i_h, N, H, P, BR, BP, D_PER_CHANNEL)
    b_x = tl.load(x + p_x, mask=m_np, other=0.0).to(tl.float32)
    b_do = tl.load(do + p_x, mask=m_np, other=0.0).to(tl.float32)
    tl.store(dx + p_x, (b_do * b_D[None, :]).to(dx.dtype.element_ty), mask=m_np)
    o_p = tl.arange(0, BP)
    tl.store(dD + (i_n * H + i_h) * P + o_p, tl.sum(b_do * b_x, axis=0), mask=o_p < P)


def _rows(x: torch.Tensor) -> tuple[int, int, int]:
    """``(R, P, BP)``: rows and width of ``x [..., P]`` and the power-of-two block of its width."""
    P = x.shape[-1]
    return x.numel() // max(P, 1), P, max(16, next_power_of_2(P))


class SSDValueFunction(torch.autograd.Function):
    """``v = x * dt[..., None]`` in ``x.dtype`` (float32 math); gradients to ``x`` and ``dt`` (float32)."""

    @staticmethod
    @contiguous
    def forward(ctx, x, dt):
        R, P, BP = _rows(x)
        v = empty(*x.shape, dtype=x.dtype, device=x.device)
        ssd_value_fwd_kernel[(cdiv(R, ROWS_PER_PROGRAM),)](x, dt, v, R, P=P, BR=ROWS_PER_PROGRAM, BP=BP)
        ctx.save_for_backward(x, dt)
        return v

    @staticmethod
    @contiguous
    def backward(ctx, dv):
        x, dt = ctx.saved_tensors
        R, P, BP = _rows(x)
        dx = empty(*x.shape, dtype=x.dtype, device=x.device)
        ddt = empty(*dt.shape, dtype=torch.float32, device=x.device)
        ssd_value_bwd_kernel[(cdiv(R, ROWS_PER_PROGRAM),)](x, dt, dv, dx, ddt, R, P=P, BR=ROWS_PER_PROGRAM, BP=BP)
        return dx, ddt.to(dt.dtype)


class SSDSkipFunction(torch.autograd.Function):
    """``o = y + D x`` in ``x.dtype`` (float32 math), ``D [H]`` or ``[H, P]``; gradients to ``y``, ``x``, ``D``."""

    @staticmethod
    @contiguous
    def forward(ctx, y, x, D):
        H, P = x.shape[-2], x.shape[-1]
        N = x.numel() // max(H * P, 1)
        o = empty(*x.shape, dtype=x.dtype, device=x.device)
        grid = (cdiv(N, ROWS_PER_PROGRAM), H)
        ssd_skip_fwd_kernel[grid](
            y, x, D, o, N, H=H, P=P, BR=ROWS_PER_PROGRAM, BP=max(16, next_power_of_2(P)), D_PER_CHANNEL=D.dim() == 2
        )
        ctx.save_for_backward(x, D)
        ctx.y_dtype = y.dtype
        return o

    @staticmethod
    @contiguous
    def backward(ctx, do):
        x, D = ctx.saved_tensors
        H, P = x.shape[-2], x.shape[-1]
        N = x.numel() // max(H * P, 1)
        NB = cdiv(N, ROWS_PER_PROGRAM)
        dx = empty(*x.shape, dtype=x.dtype, device=x.device)
        dD = torch.zeros(NB, H, P, dtype=torch.float32, device=x.device)  # no program when N == 0
        ssd_skip_bwd_kernel[(NB, H)](
            x, D, do, dx, dD, N, H=H, P=P, BR=ROWS_PER_PROGRAM, BP=max(16, next_power_of_2(P)),
            D_PER_CHANNEL=D.dim() == 2,
        )  # fmt: skip
        dD = dD.sum(0)
        return do.to(ctx.y_dtype), dx, (dD if D.dim() == 2 else dD.sum(-1)).to(D.dtype)


def ssd_value_triton(x: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """``x [B, T, H, P] * dt [B, T, H]`` -> ``[B, T, H, P]`` in ``x.dtype`` (float32 math), differentiable."""
    return SSDValueFunction.apply(x, dt)


def ssd_skip_triton(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``y + D x`` for ``y, x [B, T, H, P]``, ``D [H]`` or ``[H, P]`` -> ``x.dtype`` (float32 math), differentiable."""
    return SSDSkipFunction.apply(y, x, D)
