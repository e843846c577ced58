"""LightNet attention, token by token (the decoding path): key normalization + recurrent GLA."""

from __future__ import annotations

import torch

from fla.ops.gla.fused_recurrent import fused_recurrent_gla
from fla.ops.lightnet.chunk import State, finish_state, prepare_lightnet_call
from fla.ops.lightnet.gate import lightnet_gates


def fused_recurrent_lightnet(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Recurrent LightNet attention; same arguments and results as :func:`fla.ops.lightnet.chunk_lightnet`."""
    h0, z0 = prepare_lightnet_call(q, k, v, initial_state, state_v_first, cu_seqlens)
    k, g, zt = lightnet_gates(k, z0, cu_seqlens, q.dtype)
    o, ht = fused_recurrent_gla(q, k, v, gk=g, scale=scale, initial_state=h0,
                                output_final_state=output_final_state, cu_seqlens=cu_seqlens)  # fmt: skip
    return o, (finish_state(ht, state_v_first), zt)
