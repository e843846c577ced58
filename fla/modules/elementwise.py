"""Elementwise activations and gated linear units of fla 0.6.0 in PyTorch, with recomputing backwards.

The public functions (re-exported by :mod:`fla.modules.activations`, names and arguments as fla 0.6.0's):

* :func:`sigmoid` ``1 / (1 + exp(-x))``; :func:`logsigmoid` ``log(sigmoid(x)) / temperature``;
  :func:`swish` ``x * sigmoid(x)``; :func:`elu_p1` ``elu(x) + 1``; :func:`sqrelu` ``relu(x) ** 2``.
* :func:`fast_gelu_impl` the tanh approximation of GELU; :func:`bias_gelu_impl` the same of ``input + bias``.
* :func:`sigmoidglu` ``sigmoid(x) * y``; :func:`powglu` ``powgate(x) * y`` (see :func:`powglu`).
* :func:`sigmoidglu_linear`, :func:`powglu_linear`: ``F.linear(glu(x, y), weight, bias)``.

Each is an autograd Function that saves only its inputs: the backward recomputes what it needs from them
with the hand-derived derivative, so no activation (nor float32 intermediate) is kept between the passes.
The maths runs in float32 for 16-bit inputs (float64 stays float64); outputs come back in the input's dtype.
The ops are plain PyTorch (``torch.compile`` fuses them). The two autograd Functions here,
:class:`PointwiseFunction` and :class:`GLULinearFunction`, are shared with the Triton SwiGLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fla.utils import check_dtype, check_same_device, check_same_shape, check_shape
from fla.utils.autocast import autocast_state, backward_autocast

Tensor = torch.Tensor


def compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype the maths runs in for inputs like ``t``: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _up(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in the compute dtype of ``like``."""
    return t.to(compute_dtype(like))


class PointwiseFunction(torch.autograd.Function):
    """``fwd(*tensors, *params)``, saving only ``tensors``; the backward is ``bwd(*tensors, dout, *params)``,
    which returns one gradient per tensor (each in that tensor's dtype and shape)."""

    @staticmethod
    def forward(ctx, fwd: Callable, bwd: Callable, params: tuple, *tensors: Tensor) -> Tensor:
        ctx.bwd, ctx.params = bwd, params
        ctx.save_for_backward(*tensors)
        return fwd(*tensors, *params)

    @staticmethod
    def backward(ctx, dout: Tensor):
        return (None, None, None, *ctx.bwd(*ctx.saved_tensors, dout, *ctx.params))


class GLULinearFunction(torch.autograd.Function):
    """``F.linear(fwd(x, y, *params), weight, bias)`` keeping ``x``, ``y`` and ``weight`` only: the backward
    recomputes the ``[..., I]`` activation to form ``d weight`` and gets ``d x``, ``d y`` from
    ``bwd(x, y, dz, *params)``."""

    @staticmethod
    def forward(ctx, fwd: Callable, bwd: Callable, params: tuple, x, y, weight, bias):
        ctx.fwd, ctx.bwd, ctx.params = fwd, bwd, params
        ctx.autocast = autocast_state(x.device)  # F.linear below is autocast; so is the backward's
        ctx.save_for_backward(x, y, weight)
        ctx.has_bias = bias is not None
        return F.linear(fwd(x, y, *params), weight, bias)

    @staticmethod
    def backward(ctx, do: Tensor):
        x, y, weight = ctx.saved_tensors
        do2 = do.reshape(-1, do.shape[-1])  # [M, O]
        need_x, need_y, need_w, need_b = ctx.needs_input_grad[3:7]
        with backward_autocast(x.device, ctx.autocast):  # autograd casts each grad to its input's dtype
            dweight = dbias = dx = dy = None
            if need_w:
                z2 = ctx.fwd(x, y, *ctx.params).reshape(-1, x.shape[-1])  # recomputed, [M, I]
                dweight = do2.t().mm(z2)
            if ctx.has_bias and need_b:
                dbias = do2.sum(0)
            if need_x or need_y:
                dz = do2.mm(weight).reshape(x.shape)
                dx, dy = ctx.bwd(x, y, dz.to(x.dtype), *ctx.params)
        return None, None, None, dx, dy, dweight, dbias


def check_glu_args(x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """The two operands of a GLU: float tensors of one shape, dtype and device."""
    check_dtype(names[0], x)
    check_dtype(names[1], y, (x.dtype,))
    check_same_shape(names[0], x, names[1], y)
    check_same_device(**{names[0]: x, names[1]: y})


def check_linear_args(x: Tensor, weight: Tensor, bias: Tensor | None, name: str = "x") -> None:
    """``weight`` ``[O, I]`` with ``I = x.shape[-1]`` and ``bias`` ``[O]`` or ``None``."""
    check_shape("weight", weight, (None, x.shape[-1]), f"[O, I] with I = {name}.shape[-1]")
    if bias is not None:
        check_shape("bias", bias, (weight.shape[0],), "[O]")
    check_same_device(**{name: x, "weight": weight, "bias": bias})


def _pointwise(fwd: Callable, bwd: Callable, name: str, x: Tensor, *params) -> Tensor:
    check_dtype(name, x)
    return PointwiseFunction.apply(fwd, bwd, params, x)


# ---- sigmoid, logsigmoid, swish, elu + 1, squared relu ----


def _sigmoid_fwd(x: Tensor) -> Tensor:
    return torch.sigmoid(_up(x, x)).to(x.dtype)


def _sigmoid_bwd(x: Tensor, dy: Tensor) -> tuple[Tensor]:
    s = torch.sigmoid(_up(x, x))
    return ((_up(dy, x) * s * (1 - s)).to(x.dtype),)


def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))``. ``x``: ``[...]`` float tensor; returns ``[...]`` in ``x.dtype``."""
    return _pointwise(_sigmoid_fwd, _sigmoid_bwd, "x", x)


def _logsigmoid_fwd(x: Tensor, temperature: float) -> Tensor:
    return (F.logsigmoid(_up(x, x)) / temperature).to(x.dtype)


def _logsigmoid_bwd(x: Tensor, dy: Tensor, temperature: float) -> tuple[Tensor]:
    # d log(sigmoid(x)) / dx = 1 - sigmoid(x) = sigmoid(-x)
    return ((_up(dy, x) * torch.sigmoid(-_up(x, x)) / temperature).to(x.dtype),)


def logsigmoid(x: Tensor, temperature: float = 1.0) -> Tensor:
    """``log(sigmoid(x)) / temperature`` (stable for large ``|x|``).

    Args:
        x: ``[...]`` float tensor.
        temperature: the divisor of the log-sigmoid (a Python number).
    Returns:
        ``[...]`` tensor in ``x.dtype``.
    """
    return _pointwise(_logsigmoid_fwd, _logsigmoid_bwd, "x", x, temperature)


def _dsilu(x: Tensor) -> Tensor:
    """``d (x * sigmoid(x)) / dx = s + x * s * (1 - s)`` with ``s = sigmoid(x)``."""
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _swish_fwd(x: Tensor) -> Tensor:
    return F.silu(_up(x, x)).to(x.dtype)


def _swish_bwd(x: Tensor, dy: Tensor) -> tuple[Tensor]:
    return ((_up(dy, x) * _dsilu(_up(x, x))).to(x.dtype),)


def swish(x: Tensor) -> Tensor:
    """Swish / SiLU ``x * sigmoid(x)``. ``x``: ``[...]`` float tensor; returns ``[...]`` in ``x.dtype``."""
    return _pointwise(_swish_fwd, _swish_bwd, "x", x)


def _elu_p1_fwd(x: Tensor) -> Tensor:
    c = _up(x, x)
    # exp of the clamped value: no overflow in the unused lane, no cancellation in exp(x) - 1 + 1
    return torch.where(c >= 0, c + 1, c.clamp_max(0).exp()).to(x.dtype)


def _elu_p1_bwd(x: Tensor, dy: Tensor) -> tuple[Tensor]:
    return ((_up(dy, x) * _up(x, x).clamp_max(0).exp()).to(x.dtype),)


def elu_p1(x: Tensor) -> Tensor:
    """``elu(x) + 1``: ``x + 1`` for ``x >= 0``, ``exp(x)`` below (a positive feature map).

    ``x``: ``[...]`` float tensor; returns ``[...]`` in ``x.dtype``.
    """
    return _pointwise(_elu_p1_fwd, _elu_p1_bwd, "x", x)


def _sqrelu_fwd(x: Tensor) -> Tensor:
    return F.relu(_up(x, x)).square().to(x.dtype)


def _sqrelu_bwd(x: Tensor, dy: Tensor) -> tuple[Tensor]:
    return ((2 * _up(dy, x) * F.relu(_up(x, x))).to(x.dtype),)


def sqrelu(input: Tensor) -> Tensor:
    """Squared ReLU ``relu(input) ** 2``. ``input``: ``[...]`` float tensor; returns ``[...]`` in its dtype."""
    return _pointwise(_sqrelu_fwd, _sqrelu_bwd, "input", input)


# ---- GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) ----

_GELU_C = math.sqrt(2 / math.pi)
_GELU_A = 0.044715


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(_GELU_C * x * (1 + _GELU_A * x * x)))


def _dgelu(x: Tensor) -> Tensor:
    """``d gelu(x) / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)``, ``t`` the tanh."""
    t = torch.tanh(_GELU_C * x * (1 + _GELU_A * x * x))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_A * x * x)


def _fast_gelu_fwd(x: Tensor) -> Tensor:
    return _gelu(_up(x, x)).to(x.dtype)


def _fast_gelu_bwd(x: Tensor, dy: Tensor) -> tuple[Tensor]:
    return ((_up(dy, x) * _dgelu(_up(x, x))).to(x.dtype),)


def fast_gelu_impl(input: Tensor) -> Tensor:
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``.

    ``input``: ``[...]`` float tensor; returns ``[...]`` in its dtype.
    """
    return _pointwise(_fast_gelu_fwd, _fast_gelu_bwd, "input", input)


def _bias_gelu_fwd(x: Tensor, bias: Tensor) -> Tensor:
    return _gelu(_up(x, x) + _up(bias, x)).to(x.dtype)


def _bias_gelu_bwd(x: Tensor, bias: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    dx = _up(dy, x) * _dgelu(_up(x, x) + _up(bias, x))  # [..., D]
    return dx.to(x.dtype), dx.reshape(-1, bias.shape[0]).sum(0).to(bias.dtype)


def bias_gelu_impl(input: Tensor, bias: Tensor) -> Tensor:
    """:func:`fast_gelu_impl` of ``input + bias``.

    Args:
        input: ``[..., D]`` float tensor.
        bias: ``[D]`` float tensor.
    Returns:
        ``[..., D]`` tensor in ``input.dtype``.
    """
    check_dtype("input", input)
    check_dtype("bias", bias)
    if input.dim() == 0:
        raise ValueError("input has shape [], expected [..., D] with at least one dimension")
    check_shape("bias", bias, (input.shape[-1],), "[D] with D = input.shape[-1]")
    check_same_device(input=input, bias=bias)
    return PointwiseFunction.apply(_bias_gelu_fwd, _bias_gelu_bwd, (), input, bias)


# ---- gated linear units: act(x) * y ----


def _sigmoidglu_fwd(x: Tensor, y: Tensor) -> Tensor:
    return (torch.sigmoid(_up(x, x)) * _up(y, x)).to(x.dtype)


def _sigmoidglu_bwd(x: Tensor, y: Tensor, dz: Tensor) -> tuple[Tensor, Tensor]:
    s, d = torch.sigmoid(_up(x, x)), _up(dz, x)
    return (d * _up(y, x) * s * (1 - s)).to(x.dtype), (d * s).to(y.dtype)


def sigmoidglu(x: Tensor, y: Tensor) -> Tensor:
    """Sigmoid-gated linear unit ``sigmoid(x) * y``.

    Args:
        x, y: ``[...]`` float tensors of one shape and dtype.
    Returns:
        ``[...]`` tensor in ``x.dtype``.
    """
    check_glu_args(x, y)
    return PointwiseFunction.apply(_sigmoidglu_fwd, _sigmoidglu_bwd, (), x, y)


def sigmoidglu_linear(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(sigmoid(x) * y, weight, bias)`` recomputing the activation in the backward.

    Args:
        x, y: ``[..., I]`` tensors of one shape and dtype.
        weight: ``[O, I]``; bias: ``[O]`` or ``None``.
    Returns:
        ``[..., O]`` tensor.
    """
    check_glu_args(x, y)
    check_linear_args(x, weight, bias)
    return GLULinearFunction.apply(_sigmoidglu_fwd, _sigmoidglu_bwd, (), x, y, weight, bias)


def _powgate(x: Tensor, power: float) -> tuple[Tensor, Tensor]:
    """The power gate of float32/64 ``x`` and its derivative.

    For ``x > 0``: ``g = x ** p * s`` with ``p = power / (sqrt(x) + 1)``, ``s = sigmoid(x)``, and since
    ``log g = p log x + log s``: ``g' = g (p' log x + p / x + 1 - s)``, ``p' = -power / (2 sqrt(x) (sqrt(x) + 1)^2)``.
    For ``x <= 0``: swish, ``g = x s``, ``g' = s (1 + x (1 - s))``.
    """
    s = torch.sigmoid(x)
    pos = x > 0
    xp = torch.where(pos, x, 1.0)  # log and sqrt see positive values only; the other lanes are dropped
    r, ln = xp.sqrt(), xp.log()
    p = power / (r + 1)
    g_pos = torch.exp(p * ln) * s
    dp = -power / (2 * r * (r + 1) * (r + 1))
    g = torch.where(pos, g_pos, x * s)
    dg = torch.where(pos, g_pos * (dp * ln + p / xp + 1 - s), s * (1 + x * (1 - s)))
    return g, dg


def _powglu_fwd(x: Tensor, y: Tensor, power: float) -> Tensor:
    return (_powgate(_up(x, x), power)[0] * _up(y, x)).to(x.dtype)


def _powglu_bwd(x: Tensor, y: Tensor, dz: Tensor, power: float) -> tuple[Tensor, Tensor]:
    g, dg = _powgate(_up(x, x), power)
    d = _up(dz, x)
    return (d * _up(y, x) * dg).to(x.dtype), (d * g).to(y.dtype)


def powglu(x: Tensor, y: Tensor, power: float = 3.0) -> Tensor:
    """Power-gated linear unit ``g(x) * y`` (fla 0.6.0's PowGLU, Power Linear Unit gate).

    ``g(x) = x ** (power / (sqrt(x) + 1)) * sigmoid(x)`` for ``x > 0`` and ``x * sigmoid(x)`` (swish) for
    ``x <= 0``: SwiGLU below zero, while above zero the exponent decays so the gate grows slower than ``x``.

    Args:
        x, y: ``[...]`` float tensors of one shape and dtype.
        power: the exponent's numerator (a Python number).
    Returns:
        ``[...]`` tensor in ``x.dtype``.
    """
    check_glu_args(x, y)
    return PointwiseFunction.apply(_powglu_fwd, _powglu_bwd, (power,), x, y)


def powglu_linear(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None = None, power: float = 3.0) -> Tensor:
    """``F.linear(powglu(x, y, power), weight, bias)`` recomputing the activation in the backward.

    Args:
        x, y: ``[..., I]`` tensors of one shape and dtype.
        weight: ``[O, I]``; bias: ``[O]`` or ``None``.
        power: as in :func:`powglu`.
    Returns:
        ``[..., O]`` tensor.
    """
    check_glu_args(x, y)
    check_linear_args(x, weight, bias)
    return GLULinearFunction.apply(_powglu_fwd, _powglu_bwd, (power,), x, y, weight, bias)


__all__ = [
    "sigmoid",
    "logsigmoid",
    "swish",
    "elu_p1",
    "sqrelu",
    "fast_gelu_impl",
    "bias_gelu_impl",
    "sigmoidglu",
    "sigmoidglu_linear",
    "powglu",
    "powglu_linear",
    "PointwiseFunction",
    "GLULinearFunction",
    "check_glu_args",
    "check_linear_args",
    "compute_dtype",
]
