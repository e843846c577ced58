"""Forgetting attention, step by step (the float64 reference of :func:`parallel_forgetting_attn`)."""

from __future__ import annotations

import torch

from fla.ops.attn.naive import naive_parallel_attn


def naive_forgetting_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    window_size: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shapes as :func:`fla.ops.forgetting_attn.parallel_forgetting_attn`; returns ``o [B, T, HQ, V]`` in float32
    (float64 for float64 inputs)."""
    return naive_parallel_attn(q, k, v, scale, window_size, g=g, cu_seqlens=cu_seqlens)[0]
