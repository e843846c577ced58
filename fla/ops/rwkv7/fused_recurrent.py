"""``fused_recurrent_rwkv7`` / ``fused_mul_recurrent_rwkv7``: RWKV7 token by token (decoding), as the DPLR
delta rule's recurrent op."""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.chunk import check_dplr_options
from fla.ops.generalized_delta_rule.dplr.fused_recurrent import FusedRecurrentDPLRDeltaRuleFunction, _recurrent_torch
from fla.ops.generalized_delta_rule.dplr.inputs import prepare_dplr_call
from fla.ops.rwkv7.chunk import RWKV7_NAMES
from fla.utils import check_shape
from fla.utils.backend import dispatch


def fused_recurrent_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = True,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence of :func:`fla.ops.rwkv7.chunk_rwkv7`, token by token (fla 0.6.0's defaults: ``scale=None``
    is ``K ** -0.5``, ``output_final_state=True``); same shapes and returns."""
    check_dplr_options("fused_recurrent_rwkv7", r, kwargs)
    scale = prepare_dplr_call(r, k, v, a, b, w, scale, initial_state, cu_seqlens, names=RWKV7_NAMES)
    args = (r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens)
    inputs = (r, k, v, a, b, w, initial_state)
    return dispatch(inputs, _recurrent_torch, FusedRecurrentDPLRDeltaRuleFunction.apply, *args)


def fused_mul_recurrent_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kk: torch.Tensor,
    a: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RWKV7's decode step from the normalized key ``kk`` and the in-context rate ``a`` (both ``[B, T, H, K]``):
    the DPLR recurrence with ``a_dplr = -kk``, ``b_dplr = kk * a``; other arguments as
    :func:`fused_recurrent_rwkv7` (``reverse``: only ``False``)."""
    if reverse:
        raise NotImplementedError("fused_mul_recurrent_rwkv7: reverse=True is not supported")
    if r.dim() != 4:
        raise ValueError(f"r has shape {list(r.shape)}, expected 4 dims [B, T, H, K]")
    check_shape("kk", kk, tuple(r.shape), "[B, T, H, K] (as r)")
    check_shape("a", a, tuple(r.shape), "[B, T, H, K] (as r)")
    return fused_recurrent_rwkv7(
        r, w, k, v, -kk, kk * a, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip


__all__ = ["fused_mul_recurrent_rwkv7", "fused_recurrent_rwkv7"]
