"""Gated norms: ``y = norm(x) * act(g)``, the output gate of GLA / GatedDeltaNet / Mamba2-style layers.

The gate is fused into the same Triton kernels as the plain norms (:mod:`fla.modules.norm_kernels`):
the forward multiplies by ``act(g)``, the backward splits ``dy`` into ``dg`` and the norm's own
gradient. ``act`` is ``swish`` (= ``silu``) or ``sigmoid``.

Mamba2's variant (:class:`RMSNormGated`, fla's name) normalizes groups of ``group_size`` features
separately (the kernels' ``num_groups``) and by default gates *before* the norm
(``norm_before_gate=False``: ``y = rmsnorm(x * act(g)) * weight``; the product is formed in float32
and not saved: the backward forms it again).
"""

from __future__ import annotations

import torch

from fla.modules.norm import AffineNormBase, check_activation, fused_norm


def _num_groups(x: torch.Tensor, group_size: int | None) -> int:
    """Groups of ``group_size`` features in ``x [..., D]`` (``None``: one group); raise when it does not divide."""
    D = x.shape[-1]
    if group_size is None:
        return 1
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0 or D % group_size:
        raise ValueError(f"group_size={group_size!r} must be a positive divisor of x's last dim D={D}")
    return D // group_size


def _norm_gated(
    x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, is_rms_norm: bool,
    group_size: int | None = None, norm_before_gate: bool = True,
):  # fmt: skip
    check_activation(activation)
    num_groups = _num_groups(x, group_size)
    if not norm_before_gate:
        if residual is not None or prenorm:
            raise ValueError("norm_before_gate=False takes no residual / prenorm (the gate comes before the norm)")
        if g is not None:  # the kernels form x * act(g) in fp32 and save only x and g
            return fused_norm(
                x, weight, bias, eps=eps, num_groups=num_groups, is_rms_norm=is_rms_norm, g=g,
                activation=activation, gate_first=True,
            )  # fmt: skip
    return fused_norm(  # norm_before_gate, or no gate: a plain (grouped) norm
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        num_groups=num_groups, is_rms_norm=is_rms_norm, g=g, activation=activation if g is not None else None,
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
    group_size: int | None = None,
    norm_before_gate: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (rmsnorm(h) * weight + bias) * act(g)`` with ``h = x (+ residual)``.

    Args:
        x, g: ``[..., D]`` (same shape; ``g`` may be ``None`` with ``norm_before_gate=False``: no gate);
            weight, bias: ``[D]`` or ``None``.
        activation: ``"swish"`` / ``"silu"`` or ``"sigmoid"``.
        residual: ``[..., D]`` added to ``x`` before the norm, or ``None``.
        group_size: normalize each run of ``group_size`` features alone (``None``: all ``D`` together).
        norm_before_gate: ``False`` gates first: ``y = rmsnorm(x * act(g)) * weight + bias`` (Mamba2's
            default; no residual / prenorm then).
    Returns:
        ``y [..., D]`` in ``x.dtype``, or ``(y, h)`` when ``prenorm`` (``h`` fp32 if ``residual_in_fp32``).
    """
    return _norm_gated(
        x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, True, group_size, norm_before_gate
    )


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
    group_size: int | None = None,
    norm_before_gate: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``y = (layernorm(h) * weight + bias) * act(g)``; arguments as in :func:`rms_norm_gated`."""
    return _norm_gated(
        x, g, weight, bias, activation, eps, residual, prenorm, residual_in_fp32, False, group_size, norm_before_gate
    )


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


class _GroupGatedNorm(AffineNormBase):
    """Mamba2-style gated norm with ``group_size`` and ``norm_before_gate`` (fla's ``RMSNormGated`` /
    ``LayerNormGated``); subclasses pick the norm (``_IS_RMS``), the bias and the default gate order."""

    _IS_RMS = True

    def __init__(
        self,
        hidden_size: int,
        eps: float,
        group_size: int | None,
        norm_before_gate: bool,
        bias: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if group_size is not None and (group_size <= 0 or hidden_size % group_size):
            raise ValueError(f"group_size={group_size} must be a positive divisor of hidden_size={hidden_size}")
        super().__init__(hidden_size, True, bias, eps, device, dtype)
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}, norm_before_gate={self.norm_before_gate}"

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``x [..., hidden_size]``, gate ``z`` like ``x`` (or ``None``: no gate) -> ``y`` in ``x.dtype``."""
        return _norm_gated(  # no gate (z None): a plain (grouped) norm, whichever the gate order
            x, z, self.weight, self.bias, "swish", self.eps, None, False, False, self._IS_RMS, self.group_size,
            norm_before_gate=self.norm_before_gate,
        )  # fmt: skip


class RMSNormGated(_GroupGatedNorm):
    """Mamba2's gated RMSNorm (fla's ``RMSNormGated``; parameter ``weight [hidden_size]``, no bias).

    ``norm_before_gate=False`` (default): ``y = rmsnorm(x * silu(z)) * weight``; ``True``:
    ``y = rmsnorm(x) * weight * silu(z)``; each run of ``group_size`` features is normalized alone
    (``None``: one group). See :func:`rms_norm_gated`.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, eps, group_size, norm_before_gate, False, device, dtype)


class LayerNormGated(_GroupGatedNorm):
    """The LayerNorm twin of :class:`RMSNormGated` (fla's ``LayerNormGated``; parameters ``weight, bias
    [hidden_size]``): ``norm_before_gate=True`` (default): ``y = (layernorm(x) * weight + bias) * silu(z)``;
    ``False``: ``y = layernorm(x * silu(z)) * weight + bias``; ``group_size`` as there."""

    _IS_RMS = False

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size, eps, group_size, norm_before_gate, True, device, dtype)
