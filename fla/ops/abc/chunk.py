"""Chunked ABC: GSA without a forget gate (the slots' additive gate of :mod:`fla.ops.gsa.gate`)."""

from __future__ import annotations

import torch

from fla.ops.gsa.chunk import chunk_gsa


def chunk_abc(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """ABC (attention with bounded-memory control), chunked; fla 0.6.0's signature plus ``cu_seqlens``.

    Each of the ``M`` slots is a softmax-weighted running average of the keys (values), weighted by
    ``exp(s_t)``; ``o_t = softmax(q_t Kslots_t^T / sqrt(K)) Vslots_t``: :func:`fla.ops.gsa.chunk_gsa` with
    ``g=None`` and ``scale = K ** -0.5``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; s: ``[B, T, H, M]`` slot logits.
        initial_state: ``(hk [N, H, K, M], hv [N, H, M, V])`` or ``(hk, hv, z [N, H, M])`` (``z``: the slots'
            log normalizer; without it the first token keeps the state as is, as in fla 0.6.0).
        output_final_state: also return ``(hk, hv, z)`` float32 (pass it back to continue the sequence).
        cu_seqlens: ``[N+1]`` int32/int64 packed sequence bounds (``B == 1``).
    Returns:
        ``o [B, T, H, V]`` (``v.dtype``) and the final states or ``None``.
    """
    return chunk_gsa(q, k, v, s, None, None, initial_state, output_final_state, cu_seqlens=cu_seqlens)
