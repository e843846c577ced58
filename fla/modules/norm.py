"""Fused normalization: RMSNorm, LayerNorm and GroupNorm with an optional residual add (prenorm).

Every norm here computes, for ``x [..., D]`` and an optional ``residual`` of the same shape::

    h = x + residual                 # in fp32 when residual_in_fp32, else rounded to x.dtype
    y = norm(h) * weight + bias      # statistics in fp32, over each of num_groups groups of D / num_groups
    return (y, h) if prenorm else y  # h is the next residual stream

with an optional gate ``g``: ``y * act(g)``, or with ``gate_first`` ``norm(x * act(g)) * weight + bias``.

``norm`` is LayerNorm (``(h - mean) * rstd``) or RMSNorm (``h * rstd``). CUDA tensors run the
Triton kernels of :mod:`fla.modules.norm_kernels`; CPU tensors run the PyTorch path
(:func:`fla.utils.select_backend`). Parameter names (``weight``, ``bias``) follow
fla-org/flash-linear-attention, so its checkpoints load.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.modules.norm_kernels import MAX_GROUP_WIDTH, norm_bwd, norm_fwd
from fla.utils import check_dtype, check_same_device, check_same_shape, check_shape, select_backend

ACTIVATIONS = {"swish": "swish", "silu": "swish", "sigmoid": "sigmoid"}


def _check_inputs(
    x: torch.Tensor,
    g: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    num_groups: int,
) -> None:
    check_dtype("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension [..., D], got a scalar")
    D = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_shape(name, t, (D,), "[D] with D = x.shape[-1]")
    if residual is not None:
        check_same_shape("residual", residual, "x", x)
        check_dtype("residual", residual)
    if g is not None:
        check_same_shape("g", g, "x", x)
        check_dtype("g", g)
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    if D % num_groups != 0:
        raise ValueError(f"x has shape {list(x.shape)}: D={D} is not divisible by num_groups={num_groups}")
    check_same_device(x=x, g=g, weight=weight, bias=bias, residual=residual)


def check_activation(activation: str | None) -> None:
    """Raise unless ``activation`` names a gate activation (a key of ``ACTIVATIONS``)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def _residual_dtype(x: torch.Tensor, residual_in_fp32: bool) -> torch.dtype:
    # fp32 residual stream on request; float64 inputs never get downcast
    return torch.promote_types(x.dtype, torch.float32) if residual_in_fp32 else x.dtype


def _act(g: torch.Tensor, activation: str) -> torch.Tensor:
    return F.silu(g) if activation == "swish" else torch.sigmoid(g)


def _norm_torch(
    x, g, weight, bias, residual, eps, prenorm, residual_in_fp32, num_groups, is_rms, activation, gate_first=False
):
    """The PyTorch path (CPU), same math as the kernels; autograd does the backward."""
    compute = torch.promote_types(x.dtype, torch.float32)
    h_dtype = _residual_dtype(x, residual_in_fp32)
    h = x if residual is None else x.to(compute) + residual.to(compute)
    h = h.to(h_dtype)
    hc = h.to(compute)
    if g is not None and gate_first:
        hc, g = hc * _act(g.to(compute), activation), None
    hc = hc.unflatten(-1, (num_groups, -1))  # [..., G, D/G]
    if not is_rms:
        hc = hc - hc.mean(-1, keepdim=True)
    y = (hc * torch.rsqrt(hc.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    if weight is not None:
        y = y * weight.to(compute)
    if bias is not None:
        y = y + bias.to(compute)
    if g is not None:
        y = y * _act(g.to(compute), activation)
    y = y.to(x.dtype)
    return (y, h) if prenorm else y


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def _norm_triton_fwd(
    x, g, weight, bias, residual, eps, prenorm, residual_in_fp32, num_groups, is_rms, activation, gate_first=False
):
    """The Triton forward on contiguous inputs: ``(y, h or None, mean, rstd)``; ``h`` is stored when the
    caller returns it (prenorm) or it differs from ``x`` (a residual was added, or it is upcast)."""
    h_dtype = _residual_dtype(x, residual_in_fp32)
    store_h = residual is not None or prenorm or h_dtype != x.dtype
    h_dtype = h_dtype if store_h else None
    return norm_fwd(x, residual, g, weight, bias, eps, num_groups, is_rms, activation, h_dtype, gate_first)


class FusedNormFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton norm kernels (inputs already validated).

    Kept lean on purpose: at common sizes the host time of this wrapper and the launches is of the
    order of the kernels' device time, so no reshapes / views are made (the kernels take ``[..., D]``
    as is), and grads of unused outputs are not materialized (no zero ``dh`` to read back).
    """

    @staticmethod
    def forward(
        ctx, x, g, weight, bias, residual, eps, prenorm, residual_in_fp32, num_groups, is_rms, activation, gate_first
    ):
        ctx.set_materialize_grads(False)
        x, g, residual = x.contiguous(), _contiguous(g), _contiguous(residual)
        weight, bias = _contiguous(weight), _contiguous(bias)
        y, h, mean, rstd = _norm_triton_fwd(
            x, g, weight, bias, residual, eps, prenorm, residual_in_fp32, num_groups, is_rms, activation, gate_first
        )
        ctx.save_for_backward(h if h is not None else x, g, weight, bias, mean, rstd)
        res_dtype = residual.dtype if residual is not None else None
        ctx.meta = (num_groups, is_rms, activation, x.dtype, res_dtype, gate_first)
        return (y, h) if prenorm else y

    @staticmethod
    def backward(ctx, dy, dh=None):
        x, g, weight, bias, mean, rstd = ctx.saved_tensors
        num_groups, is_rms, activation, x_dtype, res_dtype, gate_first = ctx.meta
        need_x, need_g, need_w, need_b, need_res = ctx.needs_input_grad[:5]
        # dy is None when only the prenorm output h was used
        dy = torch.zeros_like(x, dtype=x_dtype) if dy is None else dy.contiguous()
        dx, dres, dg, dw, db = norm_bwd(
            x, g, weight, bias, mean, rstd, dy, _contiguous(dh), num_groups, is_rms, activation,
            dx_dtype=x_dtype, dres_dtype=res_dtype if need_res else None,
            need_dg=need_g, need_dw=need_w, need_db=need_b, gate_first=gate_first,
        )  # fmt: skip
        return dx if need_x else None, dg, dw, db, dres, None, None, None, None, None, None, None


def fused_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    num_groups: int = 1,
    is_rms_norm: bool = False,
    g: torch.Tensor | None = None,
    activation: str | None = None,
    gate_first: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The one entry point behind every norm of :mod:`fla.modules` (see the module docstring).

    Args:
        x: ``[..., D]``.
        weight, bias: ``[D]`` or ``None`` (no affine scale / no shift).
        residual: ``[..., D]`` added to ``x`` before the norm, or ``None``.
        num_groups: ``G``; each of the ``G`` contiguous groups of ``D / G`` features is normalized alone.
        is_rms_norm: RMSNorm (no mean subtraction) instead of LayerNorm.
        g: ``[..., D]`` gate, or ``None``; the output becomes ``norm(h) * act(g)``.
        activation: the gate's activation, ``"swish"``/``"silu"`` or ``"sigmoid"`` (with ``g`` only).
        gate_first: gate before the norm: ``y = norm(x * act(g)) * weight + bias``, the product formed in
            fp32 and, on the Triton path, never stored (the backward forms it again from ``x`` and ``g``).
            Takes no residual / prenorm.
    Returns:
        ``y [..., D]`` in ``x.dtype``; with ``prenorm`` also ``h [..., D]`` (fp32 if ``residual_in_fp32``).
    """
    _check_inputs(x, g, weight, bias, residual, num_groups)
    act = "none"
    if g is not None:
        check_activation(activation)
        act = ACTIVATIONS[activation]
    if gate_first and (residual is not None or prenorm):
        raise ValueError("gate_first takes no residual / prenorm (the gate comes before the norm)")
    gate_first = bool(gate_first) and g is not None
    args = (x, g, weight, bias, residual, eps, prenorm, residual_in_fp32, num_groups, is_rms_norm, act, gate_first)
    if select_backend(x, g, weight, bias, residual) == "torch":
        return _norm_torch(*args)
    if x.shape[-1] // num_groups > MAX_GROUP_WIDTH:
        raise ValueError(
            f"x has shape {list(x.shape)}: groups of {x.shape[-1] // num_groups} features exceed the Triton "
            f"kernels' limit of {MAX_GROUP_WIDTH}"
        )
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, g, weight, bias, residual)):
        return FusedNormFunction.apply(*args)
    # nothing to differentiate (inference, no_grad): skip the autograd Function's host overhead
    y, h, _, _ = _norm_triton_fwd(x.contiguous(), _contiguous(g), _contiguous(weight), _contiguous(bias),
                                  _contiguous(residual), *args[5:])  # fmt: skip
    return (y, h) if prenorm else y


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dim: ``y = h * rsqrt(mean(h^2) + eps) * weight + bias``, ``h = x (+ residual)``.

    Args:
        x: ``[..., D]``; weight, bias: ``[D]`` or ``None``; residual: ``[..., D]`` or ``None``.
    Returns:
        ``y [..., D]``, or ``(y, h)`` when ``prenorm`` (``h`` in fp32 when ``residual_in_fp32``).
    """
    return fused_norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=True,
    )  # fmt: skip


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim: ``y = (h - mean) * rsqrt(var + eps) * weight + bias``, ``h = x (+ residual)``.

    Args:
        x: ``[..., D]``; weight, bias: ``[D]`` or ``None``; residual: ``[..., D]`` or ``None``.
        is_rms_norm: compute RMSNorm instead (kept for fla compatibility).
    Returns:
        ``y [..., D]``, or ``(y, h)`` when ``prenorm`` (``h`` in fp32 when ``residual_in_fp32``).
    """
    return fused_norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=is_rms_norm,
    )  # fmt: skip


def group_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    num_groups: int,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm over the last dim: ``D`` features in ``num_groups`` contiguous groups, each normalized
    on its own (LayerNorm, or RMSNorm with ``is_rms_norm``), then ``* weight + bias`` over the full ``D``.

    Args:
        x: ``[..., D]`` with ``D % num_groups == 0``; weight, bias: ``[D]`` or ``None``.
        residual: ``[..., D]`` or ``None``.
    Returns:
        ``y [..., D]``, or ``(y, h)`` when ``prenorm`` (``h`` in fp32 when ``residual_in_fp32``).
    """
    return fused_norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        num_groups=num_groups, is_rms_norm=is_rms_norm,
    )  # fmt: skip


class AffineNormBase(nn.Module):
    """Holds ``weight`` / ``bias`` ``[hidden_size]`` (or ``None``) and ``eps``; subclasses pick the norm."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool,
        bias: bool,
        eps: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
            if bias:
                self.bias = nn.Parameter(torch.empty(hidden_size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight = 1``, ``bias = 0``."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        text = f"{self.hidden_size}, eps={self.eps}"
        if not self.elementwise_affine:
            text += ", elementwise_affine=False"
        elif self.bias is not None:
            text += ", bias=True"
        return text


class _PlainNorm(AffineNormBase):
    """An affine norm whose forward is ``_norm_fn(x, weight, bias, residual, eps, prenorm, residual_in_fp32)``."""

    _norm_fn = None  # set by each subclass (a staticmethod)

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x [..., hidden_size]`` -> ``y`` (or ``(y, h)`` when ``prenorm``)."""
        return self._norm_fn(x, self.weight, self.bias, residual, self.eps, prenorm, residual_in_fp32)


class RMSNorm(_PlainNorm):
    """RMSNorm over the last dim, with optional fused residual add (see :func:`rms_norm`)."""

    _norm_fn = staticmethod(rms_norm)

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)


class LayerNorm(_PlainNorm):
    """LayerNorm over the last dim, with optional fused residual add (see :func:`layer_norm`)."""

    _norm_fn = staticmethod(layer_norm)

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)


class GroupNorm(AffineNormBase):
    """GroupNorm over the last dim in ``num_groups`` groups (see :func:`group_norm`)."""

    def __init__(
        self,
        num_groups: int,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        is_rms_norm: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if hidden_size % num_groups != 0:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_groups={num_groups}")
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)
        self.num_groups = num_groups
        self.is_rms_norm = is_rms_norm

    def extra_repr(self) -> str:
        text = f"{self.num_groups}, " + super().extra_repr()
        return text + (", is_rms_norm=True" if self.is_rms_norm else "")

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x [..., hidden_size]`` -> ``y`` (or ``(y, h)`` when ``prenorm``)."""
        return group_norm(
            x, self.weight, self.bias, self.num_groups, residual, self.eps, prenorm, residual_in_fp32, self.is_rms_norm
        )


# fla 0.6.0's ``fla.modules.norm`` also holds the gated and norm + linear modules, which live in their own modules
# here (they build on this one, so they are looked up on first access instead of imported at the top: no cycle)
_DEFINED_ELSEWHERE = {
    **dict.fromkeys(("FusedRMSNormGated", "FusedLayerNormGated", "RMSNormGated", "LayerNormGated"), "gated_norm"),
    **dict.fromkeys(
        (
            "FusedRMSNormGatedLinear",
            "FusedLayerNormGatedLinear",
            "FusedRMSNormSwishGate",
            "FusedLayerNormSwishGate",
            "FusedRMSNormSwishGateLinear",
            "FusedLayerNormSwishGateLinear",
            "RMSNormLinear",
            "LayerNormLinear",
            "GroupNormLinear",
            "L2Norm",
        ),
        "norm_linear",
    ),  # fmt: skip
    "NormParallel": "norm_parallel",  # torch.distributed's tensor-parallel API: imported on first use only
}


def __getattr__(name: str):
    module = _DEFINED_ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"fla.modules.{module}"), name)
