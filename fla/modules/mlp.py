"""GatedMLP: the SwiGLU feed-forward block, parameter-compatible with fla's ``GatedMLP``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.modules.activations import swiglu_linear

_SUPPORTED_ACTS = ("swish", "silu", "powlu")


def powglu(gate: torch.Tensor, up: torch.Tensor, power: float = 3.0) -> torch.Tensor:
    """fla 0.6.0's PowGLU: ``act(gate) * up`` with ``act(x) = x ** (power / (sqrt(x) + 1)) * sigmoid(x)`` for
    ``x > 0`` and ``x * sigmoid(x)`` otherwise (float32 math, ``gate``'s dtype out; PyTorch, differentiable)."""
    x = gate.float()
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))  # only positive lanes reach the log / sqrt
    raised = torch.exp(power / (safe.sqrt() + 1.0) * safe.log())
    act = torch.where(positive, raised, x) * torch.sigmoid(x)
    return (act * up.float()).to(gate.dtype)


def default_intermediate_size(hidden_size: int, hidden_ratio: float = 4) -> int:
    """fla's default: ``2/3 * hidden_size * hidden_ratio`` rounded up to a multiple of 256."""
    size = int(hidden_size * hidden_ratio * 2 / 3)
    return 256 * ((size + 255) // 256)


class GatedMLP(nn.Module):
    """``down_proj(silu(gate_proj(x)) * up_proj(x))`` with bias-free projections.

    Args:
        hidden_size: model width ``H``.
        hidden_ratio: used for the default intermediate size (default 4).
        intermediate_size: ``I``; default :func:`default_intermediate_size`.
        hidden_act: ``"swish"`` (alias ``"silu"``) or fla's ``"powlu"`` (:func:`powglu` with ``powglu_power``,
            PyTorch); anything else raises ``ValueError``.
        fuse_swiglu: run :func:`fla.modules.activations.swiglu_linear` (Triton activation,
            recomputed in the backward instead of stored); ``False`` runs plain PyTorch ops.

    Shapes: ``x [..., H] -> [..., H]``.
    """

    def __init__(
        self,
        hidden_size: int,
        hidden_ratio: float | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "swish",
        fuse_swiglu: bool = True,
        powglu_power: float = 3.0,
    ) -> None:
        super().__init__()
        if hidden_act not in _SUPPORTED_ACTS:
            raise ValueError(f"GatedMLP: hidden_act={hidden_act!r} is not supported, expected one of {_SUPPORTED_ACTS}")
        if hidden_ratio is None:
            hidden_ratio = 4
        if intermediate_size is None:
            intermediate_size = default_intermediate_size(hidden_size, hidden_ratio)
        self.hidden_size = hidden_size
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.fuse_swiglu = fuse_swiglu
        self.powglu_power = powglu_power
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """``x [..., H] -> [..., H]``; extra keyword arguments are accepted and ignored (fla API)."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"GatedMLP: x has shape {list(x.shape)}, expected [..., {self.hidden_size}] (hidden_size)")
        gate, up = self.gate_proj(x), self.up_proj(x)
        if self.hidden_act == "powlu":
            return self.down_proj(powglu(gate, up, self.powglu_power))
        if self.fuse_swiglu:
            return swiglu_linear(gate, up, self.down_proj.weight, self.down_proj.bias)
        return self.down_proj(F.silu(gate) * up)

    def extra_repr(self) -> str:
        return f"hidden_act={self.hidden_act!r}, fuse_swiglu={self.fuse_swiglu}"


__all__ = ["GatedMLP", "default_intermediate_size", "powglu"]
