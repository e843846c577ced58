"""fla 0.6.0's ``fla.ops.common.gate`` helpers (the delta-rule families' beta gate), under fla's names."""

from __future__ import annotations

import torch


def fused_beta_sigmoid(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``scale * sigmoid(x)`` in float32 (fla returns float32 whatever ``x``'s dtype), differentiable in ``x``
    (the gradient in ``x``'s dtype)."""
    return torch.sigmoid(x.float()) * scale


def fused_beta_sigmoid_fwd(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The forward alone: ``scale * sigmoid(x)``, float32, no graph."""
    with torch.no_grad():
        return fused_beta_sigmoid(x, scale)


def fused_beta_sigmoid_bwd(x: torch.Tensor, dy: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``dy * scale * s (1 - s)`` with ``s = sigmoid(x)``, in ``x``'s dtype."""
    s = torch.sigmoid(x.float())
    return (dy.float() * scale * s * (1.0 - s)).to(x.dtype)


__all__ = ["fused_beta_sigmoid", "fused_beta_sigmoid_bwd", "fused_beta_sigmoid_fwd"]
