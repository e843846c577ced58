"""SwiGLU: ``silu(gate) * up`` with Triton kernels and a PyTorch twin.

* :func:`swiglu` - the activation alone. The backward recomputes ``silu`` from the saved
  ``gate`` and ``up`` (the activation output is never saved).
* :func:`swiglu_linear` - ``F.linear(swiglu(gate, up), weight, bias)`` that does not keep the
  ``[..., I]`` activation for the backward either: it is recomputed to form ``d weight``.

Both kernels are elementwise over the flattened tensors and compute in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fla.utils import Backend, check_dtype, check_same_device, check_same_shape, check_shape, empty_like, select_backend
from fla.utils.autocast import autocast_state, backward_autocast
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv

_BLOCK = 1024


@lean_launch
@triton.jit
def swiglu_fwd_kernel(g, u, y, n, BLOCK: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    o_x = i_b * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    m_x = o_x < n  # [BLOCK]
    b_g = tl.load(g + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BLOCK]
    b_u = tl.load(u + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BLOCK]
    b_y = b_g * tl.sigmoid(b_g) * b_u  # [BLOCK]
    tl.store(y + o_x, b_y.to(y.dtype.element_ty), mask=m_x)


@lean_launch
@triton.jit
def swiglu_bwd_kernel(g, u, dy, dg, du, n, BLOCK: tl.constexpr):
    i_b = tl.program_id(0).to(tl.int64)
    o_x = i_b * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    m_x = o_x < n  # [BLOCK]
    b_g = tl.load(g + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BLOCK]
    b_u = tl.load(u + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BLOCK]
    b_dy = tl.load(dy + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BLOCK]
    b_s = tl.sigmoid(b_g)  # [BLOCK]
    # d silu(g) / dg = s + g * s * (1 - s)
    b_dg = b_dy * b_u * b_s * (1.0 + b_g * (1.0 - b_s))  # [BLOCK]
    b_du = b_dy * b_g * b_s  # [BLOCK]
    tl.store(dg + o_x, b_dg.to(dg.dtype.element_ty), mask=m_x)
    tl.store(du + o_x, b_du.to(du.dtype.element_ty), mask=m_x)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def swiglu_fwd(gate: torch.Tensor, up: torch.Tensor, backend: Backend | None = None) -> torch.Tensor:
    """``silu(gate) * up`` without autograd (float32 math, output in ``gate.dtype``).

    Args:
        gate, up: ``[...]`` tensors of one shape and dtype.
        backend: ``"triton"`` / ``"torch"``; default ``select_backend(gate, up)``.
    Returns:
        ``[...]`` tensor like ``gate``.
    """
    if (backend or select_backend(gate, up)) == "torch":
        dtype = _compute_dtype(gate)
        return (F.silu(gate.to(dtype)) * up.to(dtype)).to(gate.dtype)
    gate, up = gate.contiguous(), up.contiguous()
    y = empty_like(gate)
    n = gate.numel()
    if n > 0:
        swiglu_fwd_kernel[(cdiv(n, _BLOCK),)](gate, up, y, n, BLOCK=_BLOCK, num_warps=4)
    return y


def swiglu_bwd(
    gate: torch.Tensor, up: torch.Tensor, dy: torch.Tensor, backend: Backend | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``silu(gate) * up`` given ``dy``, recomputing ``silu`` from ``gate``.

    Args:
        gate, up, dy: ``[...]`` tensors of one shape.
        backend: default ``select_backend(gate, up, dy)``.
    Returns:
        ``(d gate, d up)``, each ``[...]`` in the dtype of ``gate``.
    """
    if (backend or select_backend(gate, up, dy)) == "torch":
        dtype = _compute_dtype(gate)
        g, u, d = gate.to(dtype), up.to(dtype), dy.to(dtype)
        s = torch.sigmoid(g)
        dg = d * u * s * (1 + g * (1 - s))
        du = d * g * s
        return dg.to(gate.dtype), du.to(up.dtype)
    gate, up, dy = gate.contiguous(), up.contiguous(), dy.contiguous()
    dg, du = empty_like(gate), empty_like(up)
    n = gate.numel()
    if n > 0:
        swiglu_bwd_kernel[(cdiv(n, _BLOCK),)](gate, up, dy, dg, du, n, BLOCK=_BLOCK, num_warps=4)
    return dg, du


def _check_swiglu_args(gate: torch.Tensor, up: torch.Tensor) -> None:
    check_dtype("gate", gate)
    check_dtype("up", up, (gate.dtype,))
    check_same_shape("gate", gate, "up", up)
    check_same_device(gate=gate, up=up)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        # the backward runs where the forward ran (the backend may be forced only around the forward)
        ctx.backend = select_backend(gate, up)
        ctx.save_for_backward(gate, up)
        return swiglu_fwd(gate, up, ctx.backend)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        gate, up = ctx.saved_tensors
        return swiglu_bwd(gate, up, dy, ctx.backend)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation ``silu(gate) * up`` (differentiable; saves only ``gate`` and ``up``).

    Args:
        gate: ``[...]`` float tensor.
        up: ``[...]`` tensor with ``gate``'s shape and dtype.
    Returns:
        ``[...]`` tensor in ``gate.dtype``.
    """
    _check_swiglu_args(gate, up)
    return SwiGLUFunction.apply(gate, up)


class SwiGLULinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up, weight, bias):
        ctx.backend = select_backend(gate, up)
        ctx.autocast = autocast_state(gate.device)  # F.linear below is autocast; so is the backward's
        ctx.save_for_backward(gate, up, weight)
        ctx.has_bias = bias is not None
        return F.linear(swiglu_fwd(gate, up, ctx.backend), weight, bias)

    @staticmethod
    def backward(ctx, do: torch.Tensor):
        gate, up, weight = ctx.saved_tensors
        do2 = do.reshape(-1, do.shape[-1])
        with backward_autocast(gate.device, ctx.autocast):  # autograd casts each grad to its input's dtype
            y2 = swiglu_fwd(gate, up, ctx.backend).reshape(-1, gate.shape[-1])  # recomputed, [M, I]
            dweight = do2.t().mm(y2) if ctx.needs_input_grad[2] else None
            dbias = do2.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
            dgate = dup = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dy = do2.mm(weight).reshape(gate.shape)
                dgate, dup = swiglu_bwd(gate, up, dy.to(gate.dtype), ctx.backend)
        return dgate, dup, dweight, dbias


def swiglu_linear(
    gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(silu(gate) * up, weight, bias)`` recomputing the activation in the backward.

    Args:
        gate, up: ``[..., I]`` tensors of one shape and dtype.
        weight: ``[O, I]``; bias: ``[O]`` or ``None``.
    Returns:
        ``[..., O]`` tensor.
    """
    _check_swiglu_args(gate, up)
    check_shape("weight", weight, (None, gate.shape[-1]), "[O, I] with I = gate.shape[-1]")
    if bias is not None:
        check_shape("bias", bias, (weight.shape[0],), "[O]")
    return SwiGLULinearFunction.apply(gate, up, weight, bias)


__all__ = ["swiglu", "swiglu_fwd", "swiglu_bwd", "swiglu_linear", "swiglu_fwd_kernel", "swiglu_bwd_kernel"]
