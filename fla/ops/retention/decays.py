"""RetNet's fixed per-head decays."""

from __future__ import annotations

import torch


def retention_log_decays(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``g_gamma [H]`` float32: ``log(1 - 2 ** (-5 - h))`` for head ``h`` (RetNet's decays)."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


def retention_gates(q: torch.Tensor) -> torch.Tensor | None:
    """The ``g_gamma [H]`` of ``q [B, T, H, K]`` (``None`` for another rank: the op's checks then name ``q``)."""
    return retention_log_decays(q.shape[2], q.device) if q.dim() == 4 else None
