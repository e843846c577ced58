"""Chunked GSA: the training path, two passes of the shared GLA chunk pipeline (see README.md)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk import chunk_gated
from fla.ops.common.chunk_gv import chunk_value_gated
from fla.ops.gsa.inputs import gsa_two_pass


def chunk_pass_k(q, k, s, g, scale, h0, output_final_state, cu_seqlens):
    """GSA's first pass, keys -> slot scores: ``ok [B, T, H, M]`` and ``Hk [N, H, K, M]`` (the gate on the slots)."""
    return chunk_value_gated(q, k, s, g, scale, h0, output_final_state, cu_seqlens, gv_name="g")


def chunk_pass_v(qv, s, v, g, scale, h0, output_final_state, cu_seqlens):
    """GSA's second pass, slot scores -> values: ``o [B, T, H, V]`` and ``Hv [N, H, M, V]`` (the gate on the slots)."""
    return chunk_gated(qv, s, v, scale, h0, output_final_state, cu_seqlens, gk=g, gk_name="g")


def chunk_gsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    checkpoint_level: int = 2,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Gated Slot Attention, chunked (fla 0.6.0's signature). Per head, with ``M`` slots::

        Hk_t = Hk_{t-1} diag(exp(g_t)) + k_t^T s_t        ok_t = scale * q_t Hk_t        [K, M]
        Hv_t = diag(exp(g_t)) Hv_{t-1} + s_t^T v_t        o_t = softmax(ok_t) Hv_t       [M, V]

    Args:
        q: ``[B, T, HQ, K]``; k: ``[B, T, H, K]`` (``HQ`` a multiple of ``H``: GQA); v: ``[B, T, H, V]``.
        s: ``[B, T, H, M]`` slot representations (with ``g=None``: slot logits, see below).
        g: ``[B, T, H, M]`` log forget gates of the slots, or ``None`` for ABC: ``g`` and the normalized
            slots from the running log-sum-exp of ``s`` (:func:`fla.ops.gsa.gate.additive_gate`).
        scale: of the first pass, default ``K ** -0.5``.
        initial_state: ``(hk [N, H, K, M], hv [N, H, M, V])``; with ``g=None`` also ``(hk, hv, z [N, H, M])``
            (the log normalizer, to continue a sequence exactly).
        output_final_state: also return the final states (float32), with ``z`` when ``g`` is ``None``.
        checkpoint_level: accepted for fla's signature (states are always recomputed in the backward).
        cu_seqlens: ``[N+1]`` int32/int64 packed sequence bounds (``B == 1``); cu_seqlens_cpu: unused.
    Returns:
        ``o [B, T, HQ, V]`` (``v.dtype``) and the final states or ``None``.
    """
    if checkpoint_level not in (0, 1, 2):
        raise ValueError(f"chunk_gsa: checkpoint_level={checkpoint_level!r} is not one of 0, 1, 2")
    return gsa_two_pass(
        chunk_pass_k, chunk_pass_v, "chunk_gsa", q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens
    )
