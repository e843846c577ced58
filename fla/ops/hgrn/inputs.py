"""Argument checks of the HGRN ops (errors name the argument and the shapes, before any launch)."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape


def check_hgrn_inputs(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> int:
    """Validate x, g ``[B, T, D]``, initial_state ``[N, D]``, cu_seqlens ``[N+1]`` (then ``B == 1``); return ``N``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x has shape {shape}, expected 3 dims [B, T, D]")
    B, T, D = x.shape
    check_shape("g", g, (B, T, D), "[B, T, D] (as x)")
    check_dtype("x", x)
    check_dtype("g", g)
    check_same_device(x=x, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens)
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        check_shape("initial_state", initial_state, (N, D), "[N, D]")
        check_dtype("initial_state", initial_state)
    return N
