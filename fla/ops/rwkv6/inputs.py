"""Argument checks of the RWKV6 ops (the GLA family's, plus the bonus ``u``)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import prepare_gated_call
from fla.utils import check_dtype, check_same_device, check_shape


def prepare_rwkv6_call(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> float:
    """Check ``r, k [B, T, H, K]``, ``v [B, T, H, V]``, ``w [B, T, H, K]``, ``u [H, K]``, the state and
    ``cu_seqlens`` (errors name the argument: ``r`` is reported as ``q``); return the scale (``K ** -0.5``
    when ``None``)."""
    if w is None or u is None:
        raise ValueError("RWKV6 needs the log decays w [B, T, H, K] and the bonus u [H, K]")
    scale = prepare_gated_call(r, k, v, scale, initial_state, cu_seqlens, gk_name="w", gk=w)
    check_shape("u", u, (r.shape[2], r.shape[3]), "[H, K]")
    check_dtype("u", u)
    check_same_device(r=r, u=u)
    return scale
