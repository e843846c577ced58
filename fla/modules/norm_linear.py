"""fla 0.6.0's norm-then-linear modules and swish-gated norms, on our norms (fla/modules/norm.py, gated_norm.py).

``...Linear`` modules hold only the norm's parameters (``weight`` / ``bias`` ``[hidden_size]``, fla's keys); the
linear's weight and bias are arguments of ``forward(x, [g,] weight, bias, ...)``, as in fla."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fla.modules.gated_norm import FusedLayerNormGated, FusedRMSNormGated, layer_norm_gated, rms_norm_gated
from fla.modules.norm import AffineNormBase, group_norm, layer_norm, rms_norm
from fla.ops.common.inputs import l2norm
from fla.ops.common.l2norm import l2norm_triton
from fla.utils.backend import dispatch


def check_linear_args(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, name: str) -> None:
    """The linear's ``weight [out, D]`` (required) and ``bias [out]`` (or ``None``) for ``x [..., D]``."""
    if weight is None or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(f"{name}: weight must be the linear's [out_features, {x.shape[-1]}] tensor, got {shape}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{name}: bias must be [{weight.shape[0]}] (weight's out_features), got {tuple(bias.shape)}")


def _then_linear(normed, weight: torch.Tensor, bias: torch.Tensor | None, prenorm: bool):
    """``F.linear`` on the norm's output (in the linear weight's dtype); keeps ``(out, residual)`` when ``prenorm``."""
    y, h = normed if prenorm else (normed, None)
    out = F.linear(y.to(weight.dtype), weight, bias)
    return (out, h) if prenorm else out


class FusedRMSNormSwishGate(FusedRMSNormGated):
    """``rmsnorm(x) * weight * swish(g)``: :class:`FusedRMSNormGated` with ``activation="swish"`` (fla's class)."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, eps, "swish", device, dtype)


class FusedLayerNormSwishGate(FusedLayerNormGated):
    """``(layernorm(x) * weight + bias) * swish(g)``: :class:`FusedLayerNormGated` with ``activation="swish"``."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, "swish", device, dtype)


class _GatedNormLinear(AffineNormBase):
    """A swish-gated norm (no norm bias, as in fla) followed by the linear passed to ``forward``."""

    _norm_fn = None  # rms_norm_gated or layer_norm_gated (a staticmethod)

    def __init__(self, hidden_size, elementwise_affine=True, eps=1e-5, device=None, dtype=None) -> None:
        super().__init__(hidden_size, elementwise_affine, False, eps, device, dtype)

    def forward(
        self,
        x: torch.Tensor,
        g: torch.Tensor,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x, g [..., hidden_size]``, linear ``weight [out, hidden_size]``, ``bias [out]`` ->
        ``[..., out]`` (or ``(out, h)`` with ``h = x + residual`` when ``prenorm``)."""
        check_linear_args(x, weight, bias, type(self).__name__)
        normed = self._norm_fn(x, g, self.weight, None, "swish", self.eps, residual, prenorm, residual_in_fp32)
        return _then_linear(normed, weight, bias, prenorm)


class FusedRMSNormGatedLinear(_GatedNormLinear):
    """``linear(rmsnorm(x) * weight * swish(g))`` with the linear given to ``forward`` (fla's class)."""

    _norm_fn = staticmethod(rms_norm_gated)


class FusedLayerNormGatedLinear(_GatedNormLinear):
    """``linear(layernorm(x) * weight * swish(g))`` with the linear given to ``forward`` (fla's class)."""

    _norm_fn = staticmethod(layer_norm_gated)


class FusedRMSNormSwishGateLinear(FusedRMSNormGatedLinear):
    """fla's name for :class:`FusedRMSNormGatedLinear` (the gate is swish)."""


class FusedLayerNormSwishGateLinear(FusedLayerNormGatedLinear):
    """fla's name for :class:`FusedLayerNormGatedLinear` (the gate is swish)."""


class _NormLinear(AffineNormBase):
    """A norm over the last dim followed by the linear passed to ``forward``; subclasses pick ``_normalize``."""

    def _normalize(self, x, residual, prenorm, residual_in_fp32):
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x [..., hidden_size]``, linear ``weight [out, hidden_size]``, ``bias [out]`` or ``None`` ->
        ``[..., out]`` (or ``(out, h)`` with ``h = x + residual`` when ``prenorm``)."""
        check_linear_args(x, weight, bias, type(self).__name__)
        return _then_linear(self._normalize(x, residual, prenorm, residual_in_fp32), weight, bias, prenorm)


class RMSNormLinear(_NormLinear):
    """``linear(rmsnorm(x) * weight + bias)`` (fla's class; see :func:`fla.modules.norm.rms_norm`)."""

    def __init__(self, hidden_size, elementwise_affine=True, bias=False, eps=1e-5, device=None, dtype=None) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)

    def _normalize(self, x, residual, prenorm, residual_in_fp32):
        return rms_norm(x, self.weight, self.bias, residual, self.eps, prenorm, residual_in_fp32)


class LayerNormLinear(_NormLinear):
    """``linear(layernorm(x) * weight + bias)`` (fla's class; see :func:`fla.modules.norm.layer_norm`)."""

    def __init__(self, hidden_size, elementwise_affine=True, bias=False, eps=1e-5, device=None, dtype=None) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)

    def _normalize(self, x, residual, prenorm, residual_in_fp32):
        return layer_norm(x, self.weight, self.bias, residual, self.eps, prenorm, residual_in_fp32)


class GroupNormLinear(_NormLinear):
    """``linear(groupnorm(x) * weight + bias)``: ``num_groups`` contiguous groups of the last dim, each normalized
    alone (LayerNorm, or RMSNorm with ``is_rms_norm``); fla's class and argument order."""

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
        if num_groups <= 0 or hidden_size % num_groups:
            raise ValueError(f"GroupNormLinear: hidden_size={hidden_size} must be divisible by num_groups={num_groups}")
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)
        self.num_groups = num_groups
        self.is_rms_norm = is_rms_norm

    def _normalize(self, x, residual, prenorm, residual_in_fp32):
        return group_norm(
            x, self.weight, self.bias, self.num_groups, residual, self.eps, prenorm, residual_in_fp32, self.is_rms_norm
        )

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, " + super().extra_repr() + f", is_rms_norm={self.is_rms_norm}"


class L2Norm(nn.Module):
    """``x / sqrt(sum(x^2) + eps)`` over the last dim (fla's module): the Triton kernel on GPU, PyTorch on CPU.

    ``x [..., D]`` -> ``[..., D]`` in ``output_dtype`` (``None``: ``x.dtype``); float32 inside."""

    def __init__(self, eps: float = 1e-6, output_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.output_dtype = output_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = dispatch((x,), l2norm, l2norm_triton, x, self.eps)
        return y if self.output_dtype is None else y.to(self.output_dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, output_dtype={self.output_dtype}"


__all__ = [
    "FusedLayerNormGatedLinear",
    "FusedLayerNormSwishGate",
    "FusedLayerNormSwishGateLinear",
    "FusedRMSNormGatedLinear",
    "FusedRMSNormSwishGate",
    "FusedRMSNormSwishGateLinear",
    "GroupNormLinear",
    "L2Norm",
    "LayerNormLinear",
    "RMSNormLinear",
]
