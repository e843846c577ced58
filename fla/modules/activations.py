"""Activations of fla 0.6.0's ``fla.modules.activations``: SwiGLU with Triton kernels, the rest in PyTorch.

* :func:`swiglu` ``silu(x) * y`` (``x`` the gate, ``y`` the up projection) - Triton kernels and a PyTorch twin;
  the backward recomputes ``silu`` from the saved ``x`` and ``y`` (the activation output is never saved).
* :func:`swiglu_linear` - ``F.linear(swiglu(x, y), weight, bias)`` that does not keep the ``[..., I]``
  activation for the backward either: it is recomputed to form ``d weight``.
* From :mod:`fla.modules.elementwise` (PyTorch, saving only their inputs as well): :func:`sigmoid`,
  :func:`logsigmoid` (with ``temperature``), :func:`swish`, :func:`elu_p1`, :func:`sqrelu`,
  :func:`fast_gelu_impl` / :func:`bias_gelu_impl` (tanh GELU), :func:`sigmoidglu` / :func:`sigmoidglu_linear`
  and :func:`powglu` / :func:`powglu_linear` (with ``power``).
* :data:`ACT2FN` - fla 0.6.0's name -> activation table (``"relu"`` is ``F.relu``).

The SwiGLU kernels are elementwise over the flattened tensors and compute in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fla.modules.elementwise import (
    GLULinearFunction,
    PointwiseFunction,
    bias_gelu_impl,
    check_glu_args,
    check_linear_args,
    compute_dtype,
    elu_p1,
    fast_gelu_impl,
    logsigmoid,
    powglu,
    powglu_linear,
    sigmoid,
    sigmoidglu,
    sigmoidglu_linear,
    sqrelu,
    swish,
)
from fla.utils import Backend, empty_like, select_backend
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


def swiglu_fwd(gate: torch.Tensor, up: torch.Tensor, backend: Backend | None = None) -> torch.Tensor:
    """``silu(gate) * up`` without autograd (float32 math, output in ``gate.dtype``).

    Args:
        gate, up: ``[...]`` tensors of one shape and dtype.
        backend: ``"triton"`` / ``"torch"``; default ``select_backend(gate, up)``.
    Returns:
        ``[...]`` tensor like ``gate``.
    """
    if (backend or select_backend(gate, up)) == "torch":
        dtype = compute_dtype(gate)
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
        dtype = compute_dtype(gate)
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


def swiglu(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation ``silu(x) * y`` (differentiable; saves only ``x`` and ``y``). fla 0.6.0's names: ``x`` the
    gate, ``y`` the up projection.

    Args:
        x: ``[...]`` float tensor (the gate).
        y: ``[...]`` tensor with ``x``'s shape and dtype.
    Returns:
        ``[...]`` tensor in ``x.dtype``.
    """
    check_glu_args(x, y, ("x", "y"))
    # the backward runs where the forward ran (the backend may be forced only around the forward)
    return PointwiseFunction.apply(swiglu_fwd, swiglu_bwd, (select_backend(x, y),), x, y)


def swiglu_linear(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(silu(x) * y, weight, bias)`` recomputing the activation in the backward (fla 0.6.0's signature:
    ``x`` the gate, ``y`` the up projection).

    Args:
        x, y: ``[..., I]`` tensors of one shape and dtype.
        weight: ``[O, I]``; bias: ``[O]`` or ``None``.
    Returns:
        ``[..., O]`` tensor.
    """
    check_glu_args(x, y, ("x", "y"))
    check_linear_args(x, weight, bias, "x")
    backend = select_backend(x, y)
    return GLULinearFunction.apply(swiglu_fwd, swiglu_bwd, (backend,), x, y, weight, bias)


# fla 0.6.0's table: the same keys, our functions ("bias_gelu" takes ``(input, bias)``)
ACT2FN = {
    "relu": F.relu,
    "sigmoid": sigmoid,
    "logsigmoid": logsigmoid,
    "silu": swish,
    "swish": swish,
    "sqrelu": sqrelu,
    "gelu": fast_gelu_impl,
    "bias_gelu": bias_gelu_impl,
}

__all__ = [
    "ACT2FN",
    "bias_gelu_impl",
    "elu_p1",
    "fast_gelu_impl",
    "logsigmoid",
    "powglu",
    "powglu_linear",
    "sigmoid",
    "sigmoidglu",
    "sigmoidglu_linear",
    "sqrelu",
    "swiglu",
    "swiglu_linear",
    "swish",
    "swiglu_fwd",
    "swiglu_bwd",
    "swiglu_fwd_kernel",
    "swiglu_bwd_kernel",
]
