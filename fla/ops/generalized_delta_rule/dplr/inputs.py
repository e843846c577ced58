"""Argument checks of the DPLR delta-rule ops (the vector-gated ones, plus the low-rank pair ``a``, ``b``)."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import prepare_gated_call
from fla.utils import check_dtype, check_same_device, check_shape


def prepare_dplr_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    names: tuple[str, ...] = ("q", "k", "v", "a", "b", "gk"),
) -> float:
    """Check ``q, k, a, b, gk [B, T, H, K]``, ``v [B, T, H, V]``, ``initial_state [N, H, K, V]`` and ``cu_seqlens``
    (``[N+1]`` int32/int64, increasing, last == tokens); errors name the argument (``names``: the public op's
    names of the six tensors, e.g. RWKV7's ``r, k, v, a, b, w``). Returns the scale (``K ** -0.5`` when ``None``)."""
    for name, t in zip(names, (q, k, v, a, b, gk)):
        if t is None:
            raise ValueError(f"{', '.join(names)} are all required; {name} is None")
    scale = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, gk_name=names[5], gk=gk)
    for name, t in ((names[3], a), (names[4], b)):
        check_shape(name, t, tuple(q.shape), "[B, T, H, K] (as q)")
        check_dtype(name, t)
    check_same_device(q=q, a=a, b=b)
    return scale
