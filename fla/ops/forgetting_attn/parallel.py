"""Forgetting attention on :func:`fla.ops.attn.parallel_attn` (the forget gate is its ``g``)."""

from __future__ import annotations

import torch

from fla.ops.attn.parallel import parallel_attn


def parallel_forgetting_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    window_size: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """FoX attention: ``o_i = sum_{j <= i} softmax_j(scale * q_i . k_j + sum_{j < m <= i} g_m) v_j``.

    Args:
        q: ``[B, T, HQ, K]``; k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (``H`` divides ``HQ``).
        g: ``[B, T, HQ]`` log forget gates (``<= 0``, e.g. ``logsigmoid``); required.
        scale: default ``K ** -0.5``; window_size: sliding window (``None``: full causal).
        cu_seqlens: ``[N+1]`` packed sequence bounds (then ``B == 1``).
    Returns:
        ``o [B, T, HQ, V]`` in ``q.dtype``.
    """
    if g is None:
        raise ValueError("parallel_forgetting_attn needs the forget gate g [B, T, HQ], got None")
    return parallel_attn(q, k, v, g, scale, window_size=window_size, cu_seqlens=cu_seqlens)
