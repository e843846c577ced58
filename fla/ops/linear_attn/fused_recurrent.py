"""Linear attention, token by token: the decoding path."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_scale
from fla.ops.linear_attn.utils import apply_normalization, split_state
from fla.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla


def fused_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | tuple | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    normalize: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """Linear attention by the recurrence (see :func:`fla.ops.linear_attn.chunk_linear_attn`).

    Same arguments, plus ``reverse`` (must be ``False``); ``normalize`` defaults to ``False``
    here, as in fla.
    """
    h0, z0 = split_state(initial_state, normalize)
    o, ht = fused_recurrent_simple_gla(
        q, k, v, scale=scale, initial_state=h0, output_final_state=output_final_state, reverse=reverse,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip
    scale = default_scale(scale, k)
    return apply_normalization(o, q, k, ht, z0, scale, normalize, output_final_state, cu_seqlens)
