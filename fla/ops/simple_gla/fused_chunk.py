"""``fused_chunk_simple_gla``: fla's other kernel for simple GLA; same maths and outputs as the chunk op."""

import torch

from fla.ops.simple_gla.chunk import chunk_simple_gla


def fused_chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA, as :func:`fla.ops.simple_gla.chunk_simple_gla` (fla 0.6.0's argument names and order).

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g ``[B, T, H]`` and/or g_gamma ``[H]`` log decays,
    initial_state ``[N, H, K, V]``, cu_seqlens ``[N+1]`` -> (o ``[B, T, H, V]``, final state or ``None``)."""
    return chunk_simple_gla(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens)


__all__ = ["fused_chunk_simple_gla"]
