"""Gated norms: ``y = norm(x) * act(g)``, the output gate of GLA / GatedDeltaNet / Mamba2-style layers.

The gate is fused into the same Triton kernels as the plain norms (:mod:`fla.modules.norm_kernels`):
the forward multiplies by ``act(g)``, the backward splits ``dy`` into ``dg`` and the norm's own
gradient. ``act`` is ``swish`` (= ``silu``) or ``sigmoid``.
"""

from __future__ import annotations

import torch

from fla.modules.norm import AffineNormBase, check_activation, fused_norm


def _norm_gated(x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, is_rms_norm: bool):
    check_activation(activation)
    return fused_norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=is_rms_norm, g=g, activation=activation,
    )  # fmt: skip


def rms_norm_gated(
    x: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    activation: str = "swish",
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (rmsnorm(h) * weight + bias) * act(g)`` with ``h = x (+ residual)``.

    Args:
        x, g: ``[..., D]`` (same shape); weight, bias: ``[D]`` or ``None``.
        activation: ``"swish"`` / ``"silu"`` or ``"sigmoid"``.
        residual: ``[..., D]`` added to ``x`` before the norm, or ``None``.
    Returns:
        ``y [..., D]`` in ``x.dtype``, or ``(y, h)`` when ``prenorm`` (``h`` fp32 if ``residual_in_fp32``).
    """
    return _norm_gated(x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, is_rms_norm=True)


def layer_norm_gated(
    x: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    activation: str = "swish",
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (layernorm(h) * weight + bias) * act(g)``; arguments as in :func:`rms_norm_gated`."""
    return _norm_gated(x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, is_rms_norm=False)


class _GatedNorm(AffineNormBase):
    """An affine norm that also holds the gate ``activation``; subclasses pick ``_norm_fn``."""

    _norm_fn = None  # rms_norm_gated or layer_norm_gated (a staticmethod)

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool,
        bias: bool,
        eps: float,
        activation: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        check_activation(activation)
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)
        self.activation = activation

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation!r}"

    def forward(
        self,
        x: torch.Tensor,
        g: torch.Tensor,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x, g [..., hidden_size]`` -> ``y`` (or ``(y, h)`` when ``prenorm``)."""
        return self._norm_fn(
            x, g, self.weight, self.bias, self.activation, self.eps, residual, prenorm, residual_in_fp32
        )


class FusedRMSNormGated(_GatedNorm):
    """``rmsnorm(x) * weight * act(g)`` (see :func:`rms_norm_gated`); no bias, as in fla."""

    _norm_fn = staticmethod(rms_norm_gated)

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        eps: float = 1e-5,
        activation: str = "swish",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, False, eps, activation, device, dtype)


class FusedLayerNormGated(_GatedNorm):
    """``(layernorm(x) * weight + bias) * act(g)`` (see :func:`layer_norm_gated`)."""

    _norm_fn = staticmethod(layer_norm_gated)

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        activation: str = "swish",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, elementwise_affine, bias, eps, activation, device, dtype)
