"""GSA token by token: the decoding path (two passes of the shared recurrent kernel)."""

from __future__ import annotations

import torch

from fla.ops.common.fused_recurrent import fused_recurrent_gated
from fla.ops.gsa.inputs import gsa_two_pass

_OP = "fused_recurrent_gsa"


def _pass_k(q, k, s, g, scale, h0, output_final_state, cu_seqlens):
    return fused_recurrent_gated(_OP, q, k, s, scale, h0, output_final_state, False, cu_seqlens, gv=g)


def _pass_v(qv, s, v, g, scale, h0, output_final_state, cu_seqlens):
    return fused_recurrent_gated(_OP, qv, s, v, scale, h0, output_final_state, False, cu_seqlens, gk=g)


def fused_recurrent_gsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """GSA by the recurrence (fla 0.6.0's signature); the maths and arguments of
    :func:`fla.ops.gsa.chunk_gsa`. The backward runs the chunk pipeline. ``reverse`` must be ``False``.

    Returns:
        ``o [B, T, HQ, V]`` and ``(hk, hv)`` (``(hk, hv, z)`` when ``g`` is ``None``) or ``None``.
    """
    if reverse:
        raise NotImplementedError("fused_recurrent_gsa: reverse=True is not supported")
    return gsa_two_pass(
        _pass_k, _pass_v, "fused_recurrent_gsa", q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens
    )
