"""Chunked linear attention (no gate), optionally normalized."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_scale
from fla.ops.linear_attn.utils import apply_normalization, split_state
from fla.ops.simple_gla.chunk import chunk_simple_gla


def chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | tuple | None = None,
    output_final_state: bool = False,
    normalize: bool = True,
    cu_seqlens: torch.Tensor | None = None,
):
    """Linear attention ``S_t = S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]`` (apply the feature map before); v: ``[B, T, H, V]``;
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``, or with ``normalize`` also the pair
            ``(S0 [N, H, K, V], z0 [N, 1, H, K])`` (``z`` = running key sum).
        output_final_state: also return the final state (``S_T``, or ``(S_T, z_T)`` with normalize).
        normalize: ``o_t <- o_t / (scale * q_t . z_t + 1e-10)`` (default ``True``, as in fla).
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    """
    h0, z0 = split_state(initial_state, normalize)
    o, ht = chunk_simple_gla(
        q, k, v, scale=scale, initial_state=h0, output_final_state=output_final_state, cu_seqlens=cu_seqlens
    )
    scale = default_scale(scale, k)
    return apply_normalization(o, q, k, ht, z0, scale, normalize, output_final_state, cu_seqlens)
