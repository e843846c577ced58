"""L2 normalization over the last dim (Triton, forward and backward): ``use_qk_l2norm_in_kernel``.

    y = x * r,   r = (sum(x^2) + eps)^{-1/2}          (fp32 math, ``y`` in ``x.dtype``)
    dx = r * (dy - (y . dy) y)

One pass each way; the forward keeps ``r`` (fp32, one value per row) for the backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

ROWS_PER_PROGRAM = 16


@lean_launch
@triton.jit
def l2norm_fwd_kernel(x, y, r, eps, N, D: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr):
    eps = tl.cast(eps, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_r = tl.program_id(0).to(tl.int64)
    o_r = i_r * BR + tl.arange(0, BR)  # [BR] rows
    o_d = tl.arange(0, BD)  # [BD]
    m_r = o_r < N
    m_rd = m_r[:, None] & (o_d < D)[None, :]
    p_x = o_r[:, None] * D + o_d[None, :]  # [BR, BD]
    b_x = tl.load(x + p_x, mask=m_rd, other=0.0).to(tl.float32)
    b_r = 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=1) + eps)  # [BR]
    tl.store(y + p_x, (b_x * b_r[:, None]).to(y.dtype.element_ty), mask=m_rd)
    tl.store(r + o_r, b_r, mask=m_r)


@lean_launch
@triton.jit
def l2norm_bwd_kernel(x, r, dy, dx, N, D: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr):
    i_r = tl.program_id(0).to(tl.int64)
    o_r = i_r * BR + tl.arange(0, BR)  # [BR] rows
    o_d = tl.arange(0, BD)  # [BD]
    m_r = o_r < N
    m_rd = m_r[:, None] & (o_d < D)[None, :]
    p_x = o_r[:, None] * D + o_d[None, :]  # [BR, BD]
    b_r = tl.load(r + o_r, mask=m_r, other=0.0)  # [BR]
    b_y = tl.load(x + p_x, mask=m_rd, other=0.0).to(tl.float32) * b_r[:, None]  # [BR, BD]
    b_dy = tl.load(dy + p_x, mask=m_rd, other=0.0).to(tl.float32)  # [BR, BD]
    b_dx = b_r[:, None] * (b_dy - tl.sum(b_y * b_dy, axis=1)[:, None] * b_y)
    tl.store(dx + p_x, b_dx.to(dx.dtype.element_ty), mask=m_rd)


def _launch(kernel, x: torch.Tensor, *args) -> None:
    D = x.shape[-1]
    N = x.numel() // max(D, 1)
    kernel[(cdiv(N, ROWS_PER_PROGRAM),)](x, *args, N, D=D, BR=ROWS_PER_PROGRAM, BD=max(16, next_power_of_2(D)))


class L2NormFunction(torch.autograd.Function):
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, Triton forward and backward."""

    @staticmethod
    @contiguous
    def forward(ctx, x, eps):
        y = empty(*x.shape, dtype=x.dtype, device=x.device)
        r = empty(*x.shape[:-1], dtype=torch.float32, device=x.device)
        _launch(l2norm_fwd_kernel, x, y, r, eps)
        ctx.save_for_backward(x, r)
        return y

    @staticmethod
    @contiguous
    def backward(ctx, dy):
        x, r = ctx.saved_tensors
        dx = empty(*x.shape, dtype=x.dtype, device=x.device)
        _launch(l2norm_bwd_kernel, x, r, dy, dx)
        return dx, None


def l2norm_triton(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalize ``x [..., D]`` over its last dim with the Triton kernels (differentiable; same math
    as :func:`fla.ops.common.inputs.l2norm`)."""
    return L2NormFunction.apply(x, eps)
