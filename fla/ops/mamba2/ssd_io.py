"""The SSD's element-wise stages around the simple-GLA core, fused (Triton, forward and backward).

    input stage:   dt = clamp(softplus(dt_raw + dt_bias), dt_limit),  g = -exp(A_log) dt,  v = x dt
                   x [B, T, H, P], dt_raw [B, T, H]  ->  v [B, T, H, P] (x.dtype), g [B, T, H] (float32)
    skip:          o = y + D x                       y, x [B, T, H, P], D [H] or [H, P]  ->  x.dtype

In PyTorch these are a dozen launches over ``[B, T, H]`` and several passes over ``[B, T, H, P]`` with float32
temporaries (cast, multiply, cast back; again in the backward), which cost Mamba2 about as much as the scan itself
at bf16. Here the forward is one pass per stage and the backward one pass for both (the chunked op,
:class:`fla.ops.mamba2.chunk.ChunkSSDFunction`), float32 math in registers:

    dx = dv dt + do D,   d(dt) = sum_P dv x + dg A,   ddt_raw = d(dt) softplus'(dt_raw + dt_bias) (0 where clamped)
    dA_log = sum dg A dt,   d dt_bias = sum ddt_raw,   dD = sum do x     (per-program partial sums, added on the host)

(``dv``, ``dg``: the gradients of the simple-GLA core's values and per-token log decays). The decode path
(:mod:`fla.ops.mamba2.fused_recurrent`) uses the same kernels through :class:`SSDInputFunction` and
:class:`SSDSkipFunction`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fla.utils import contiguous, empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

ROWS_PER_PROGRAM = 32
STAGE_ROWS = 64  # tokens per program of the input stage: fewer partial sums of dA_log / dt_bias / dD


@triton.jit
def _softplus(x):
    """``log(1 + exp(x))`` as ``torch.nn.functional.softplus`` (beta 1, threshold 20), without the ``1 + tiny``
    rounding to 0 for very negative ``x``."""
    return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))


@triton.jit
def _head_tile(i_n, i_h, N, H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr):
    """Head ``i_h``'s tile of tokens ``i_n * BR ...`` in ``[N, H, P]`` rows (``N = B*T``): the tokens ``o_n [BR]``,
    channels ``o_p [BP]``, their masks ``m_n``, ``m_p``, ``m_np [BR, BP]`` and the offsets ``p_x [BR, BP]``."""
    o_n = i_n * BR + tl.arange(0, BR)  # [BR]
    o_p = tl.arange(0, BP)  # [BP]
    m_n, m_p = o_n < N, o_p < P
    return o_n, o_p, m_n, m_p, m_n[:, None] & m_p[None, :], (o_n[:, None] * H + i_h) * P + o_p[None, :]


@triton.jit
def _time_step(dt_raw, dt_bias, o_n, m_n, i_h, dt_low, dt_high, H: tl.constexpr, HAS_BIAS: tl.constexpr,
               HAS_LIMIT: tl.constexpr):  # fmt: skip
    """Head ``i_h``'s step at tokens ``o_n`` (float32 ``[BR]`` each): the pre-activation ``dt + dt_bias``, its
    softplus and the step ``dt`` (the softplus clamped to ``[dt_low, dt_high]`` with ``HAS_LIMIT``)."""
    b_pre = tl.load(dt_raw + o_n * H + i_h, mask=m_n, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_pre += tl.load(dt_bias + i_h).to(tl.float32)
    b_sp = _softplus(b_pre)
    b_dt = b_sp
    if HAS_LIMIT:
        b_dt = tl.minimum(tl.maximum(b_sp, dt_low), dt_high)
    return b_pre, b_sp, b_dt


@lean_launch
@triton.jit
def ssd_in_fwd_kernel(
    x, dt_raw, dt_bias, A_log, v, g, N, dt_low, dt_high,
    H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_LIMIT: tl.constexpr,
):  # fmt: skip
    """Head ``program_id(1)``, tokens ``program_id(0) * BR ...`` of ``[N, H, ...]`` rows (``N = B*T``):
    ``dt = clamp(softplus(dt_raw + dt_bias))``, ``g = -exp(A_log) dt`` (float32 ``[N, H]``), ``v = x dt``."""
    i_n, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_n, _, m_n, _, m_np, p_x = _head_tile(i_n, i_h, N, H, P, BR, BP)
    _, _, b_dt = _time_step(dt_raw, dt_bias, o_n, m_n, i_h, dt_low, dt_high, H, HAS_BIAS, HAS_LIMIT)
    b_A = -tl.exp(tl.load(A_log + i_h).to(tl.float32))
    tl.store(g + o_n * H + i_h, b_A * b_dt, mask=m_n)
    b_x = tl.load(x + p_x, mask=m_np, other=0.0).to(tl.float32)
    tl.store(v + p_x, (b_x * b_dt[:, None]).to(v.dtype.element_ty), mask=m_np)


@lean_launch
@triton.jit
def ssd_in_bwd_kernel(
    x, dt_raw, dt_bias, A_log, dv, dg, do, D, dx, ddt, dA_p, dbias_p, dD_p, N, dt_low, dt_high,
    H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_LIMIT: tl.constexpr, HAS_SKIP: tl.constexpr, D_PER_CHANNEL: tl.constexpr,
):  # fmt: skip
    """The input stage's backward (and, with ``HAS_SKIP``, the ``D x`` skip's) for one head and ``BR`` tokens:

        dx     = dv dt (+ do D)
        d(dt)  = sum_P dv x + dg A                   (dL/d dt after the clamp; 0 where the clamp bites)
        ddt    = d(dt) softplus'(dt_raw + dt_bias)   (float32 [N, H])

    and this program's partial sums (float32, added on the host): ``dA_log`` (``sum dg A dt``) and ``dt_bias``
    (``sum ddt``) into ``[NB, H]``, ``dD`` (``sum do x``) into ``[NB, H, P]``."""
    i_n, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_n, o_p, m_n, m_p, m_np, p_x = _head_tile(i_n, i_h, N, H, P, BR, BP)
    b_pre, b_sp, b_dt = _time_step(dt_raw, dt_bias, o_n, m_n, i_h, dt_low, dt_high, H, HAS_BIAS, HAS_LIMIT)
    b_A = -tl.exp(tl.load(A_log + i_h).to(tl.float32))
    b_x = tl.load(x + p_x, mask=m_np, other=0.0).to(tl.float32)
    b_dv = tl.load(dv + p_x, mask=m_np, other=0.0).to(tl.float32)
    b_dg = tl.load(dg + o_n * H + i_h, mask=m_n, other=0.0).to(tl.float32)  # [BR]
    b_dx = b_dv * b_dt[:, None]
    if HAS_SKIP:
        b_do = tl.load(do + p_x, mask=m_np, other=0.0).to(tl.float32)
        b_dx += b_do * _d_row(D, i_h, P, BP, D_PER_CHANNEL)[None, :]
        tl.store(dD_p + (i_n * H + i_h) * P + o_p, tl.sum(b_do * b_x, axis=0), mask=m_p)
    tl.store(dx + p_x, b_dx.to(dx.dtype.element_ty), mask=m_np)
    b_ddt = tl.sum(b_dv * b_x, axis=1) + b_dg * b_A  # [BR] dL/d dt
    if HAS_LIMIT:
        b_ddt = tl.where((b_sp >= dt_low) & (b_sp <= dt_high), b_ddt, 0.0)
    # softplus' = sigmoid below torch's threshold (20), 1 above it
    b_ddt = tl.where(m_n, b_ddt * tl.where(b_pre > 20.0, 1.0, 1.0 / (1.0 + tl.exp(-b_pre))), 0.0)
    tl.store(ddt + o_n * H + i_h, b_ddt, mask=m_n)
    tl.store(dA_p + i_n * H + i_h, tl.sum(b_dg * b_A * b_dt, axis=0))
    tl.store(dbias_p + i_n * H + i_h, tl.sum(b_ddt, axis=0))


@triton.jit
def _d_row(D, i_h, P: tl.constexpr, BP: tl.constexpr, D_PER_CHANNEL: tl.constexpr):
    """Head ``i_h``'s skip weights ``[BP]`` (float32): ``D[i_h, :]`` per channel, else ``D[i_h]`` broadcast."""
    o_p = tl.arange(0, BP)
    if D_PER_CHANNEL:
        return tl.load(D + i_h * P + o_p, mask=o_p < P, other=0.0).to(tl.float32)
    return tl.load(D + i_h + o_p * 0).to(tl.float32)


@triton.jit
def _skip_tile(D, i_n, i_h, N, H: tl.constexpr, P: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr,
               D_PER_CHANNEL: tl.constexpr):  # fmt: skip
    """Offsets ``[BR, BP]`` of head ``i_h`` in rows ``i_n * BR ...`` of a ``[N, H, P]`` tensor, their mask, and
    the head's ``D`` row ``[BP]`` (float32)."""
    _, _, _, _, m_np, p_x = _head_tile(i_n, i_h, N, H, P, BR, BP)
    return p_x, m_np, _d_row(D, i_h, P, BP, D_PER_CHANNEL)


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


def _width(x: torch.Tensor) -> tuple[int, int, int, int]:
    """``(N, H, P, BP)`` of ``x [..., H, P]``: tokens, heads, width and the power-of-two block of the width."""
    H, P = x.shape[-2], x.shape[-1]
    return x.numel() // max(H * P, 1), H, P, max(16, next_power_of_2(P))


def _limits(dt_limit: tuple[float, float]) -> tuple[bool, float, float]:
    """``(HAS_LIMIT, low, high)``: whether the clamp can bite (softplus is >= 0 already) and its bounds."""
    low, high = float(dt_limit[0]), float(dt_limit[1])
    has_limit = low > 0 or high != math.inf
    return has_limit, (low if has_limit else 0.0), (high if has_limit else 0.0)


def ssd_in_fwd(
    x: torch.Tensor, dt: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None, dt_limit: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``v = x * dt`` ``[B, T, H, P]`` (``x.dtype``) and ``g = A * dt`` ``[B, T, H]`` (float32), ``dt`` the clamped
    ``softplus(dt + dt_bias)``, ``A = -exp(A_log)``: one pass (contiguous inputs)."""
    N, H, P, BP = _width(x)
    v = empty(*x.shape, dtype=x.dtype, device=x.device)
    g = empty(*dt.shape, dtype=torch.float32, device=x.device)
    has_limit, low, high = _limits(dt_limit)
    ssd_in_fwd_kernel[(cdiv(N, STAGE_ROWS), H)](
        x, dt, dt_bias, A_log, v, g, N, low, high, H=H, P=P, BR=STAGE_ROWS, BP=BP, HAS_BIAS=dt_bias is not None,
        HAS_LIMIT=has_limit,
    )  # fmt: skip
    return v, g


def ssd_in_bwd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_limit: tuple[float, float],
    dv: torch.Tensor,
    dg: torch.Tensor,
    do: torch.Tensor | None = None,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gradients of :func:`ssd_in_fwd` from ``dv [B, T, H, P]`` and ``dg [B, T, H]`` (float32), and, when ``D``
    is given, of the skip ``o = y + D x`` from ``do`` in the same pass (contiguous inputs).

    Returns:
        ``dx`` (``x.dtype``), ``ddt`` (``dt.dtype``), ``dA_log``, ``d dt_bias`` (or ``None``) and ``dD`` (or
        ``None``), each in its input's dtype.
    """
    N, H, P, BP = _width(x)
    NB = cdiv(N, STAGE_ROWS)
    dx = empty(*x.shape, dtype=x.dtype, device=x.device)
    ddt = empty(*dt.shape, dtype=torch.float32, device=x.device)
    # the partial sums start at zero: no program runs when N == 0
    dA_p, dbias_p = (torch.zeros(NB, H, dtype=torch.float32, device=x.device) for _ in range(2))
    dD_p = None if D is None else torch.zeros(NB, H, P, dtype=torch.float32, device=x.device)
    has_limit, low, high = _limits(dt_limit)
    ssd_in_bwd_kernel[(NB, H)](
        x, dt, dt_bias, A_log, dv, dg, do, D, dx, ddt, dA_p, dbias_p, dD_p, N, low, high, H=H, P=P, BR=STAGE_ROWS,
        BP=BP, HAS_BIAS=dt_bias is not None, HAS_LIMIT=has_limit, HAS_SKIP=D is not None,
        D_PER_CHANNEL=D is not None and D.dim() == 2,
    )  # fmt: skip
    dbias = None if dt_bias is None else dbias_p.sum(0).to(dt_bias.dtype)
    dD = None
    if D is not None:
        dD = dD_p.sum(0)
        dD = (dD if D.dim() == 2 else dD.sum(-1)).to(D.dtype)
    return dx, ddt.to(dt.dtype), dA_p.sum(0).to(A_log.dtype), dbias, dD


def ssd_skip_fwd(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``o = y + D x`` ``[B, T, H, P]`` in ``x.dtype`` (contiguous inputs; ``D [H]`` or ``[H, P]``)."""
    N, H, P, BP = _width(x)
    o = empty(*x.shape, dtype=x.dtype, device=x.device)
    ssd_skip_fwd_kernel[(cdiv(N, ROWS_PER_PROGRAM), H)](
        y, x, D, o, N, H=H, P=P, BR=ROWS_PER_PROGRAM, BP=BP, D_PER_CHANNEL=D.dim() == 2
    )
    return o


class SSDInputFunction(torch.autograd.Function):
    """``(v, g)`` of :func:`ssd_in_fwd`, differentiable in ``x``, ``dt``, ``A_log`` and ``dt_bias``."""

    @staticmethod
    @contiguous
    def forward(ctx, x, dt, A_log, dt_bias, dt_limit):
        v, g = ssd_in_fwd(x, dt, A_log, dt_bias, dt_limit)
        ctx.save_for_backward(x, dt, A_log, dt_bias)
        ctx.dt_limit = dt_limit
        return v, g

    @staticmethod
    @contiguous
    def backward(ctx, dv, dg):
        x, dt, A_log, dt_bias = ctx.saved_tensors
        dv = torch.zeros_like(x) if dv is None else dv
        dg = torch.zeros(dt.shape, dtype=torch.float32, device=dt.device) if dg is None else dg
        dx, ddt, dA_log, dbias, _ = ssd_in_bwd(x, dt, A_log, dt_bias, ctx.dt_limit, dv, dg)
        return dx, ddt, dA_log, dbias, None


class SSDSkipFunction(torch.autograd.Function):
    """``o = y + D x`` in ``x.dtype`` (float32 math), ``D [H]`` or ``[H, P]``; gradients to ``y``, ``x``, ``D``."""

    @staticmethod
    @contiguous
    def forward(ctx, y, x, D):
        o = ssd_skip_fwd(y, x, D)
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


def ssd_inputs_triton(
    x: torch.Tensor, dt: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None, dt_limit: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, g)`` of :func:`ssd_in_fwd` (``x [B, T, H, P]``, raw ``dt [B, T, H]``), differentiable."""
    return SSDInputFunction.apply(x, dt, A_log, dt_bias, dt_limit)


def ssd_skip_triton(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``y + D x`` for ``y, x [B, T, H, P]``, ``D [H]`` or ``[H, P]`` -> ``x.dtype`` (float32 math), differentiable."""
    return SSDSkipFunction.apply(y, x, D)
