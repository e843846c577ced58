"""Argument checks of the Comba ops (the delta-rule checks plus the erase keys ``p``)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import prepare_delta_call
from fla.utils import check_dtype, check_same_device, check_shape


def prepare_comba_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor | None,
    g: torch.Tensor | None,
    beta: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Check the inputs of a Comba op (shapes as :func:`fla.ops.comba.chunk_comba`), before any kernel.

    Returns:
        ``p`` (``k`` when ``None``), ``beta`` (ones when ``None``) and the scale (``K ** -0.5`` when ``None``).
    """
    beta, scale = prepare_delta_call(q, k, v, beta, g, scale, initial_state, cu_seqlens)
    if p is None:
        return k, beta, scale
    check_shape("p", p, tuple(k.shape), "[B, T, H, K] (as k)")
    check_dtype("p", p)
    if p.dtype != k.dtype:
        raise TypeError(f"p has dtype {p.dtype} but k has dtype {k.dtype}; p and k must share one dtype")
    check_same_device(k=k, p=p)
    return p, beta, scale
