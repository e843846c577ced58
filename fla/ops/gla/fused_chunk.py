"""``fused_chunk_gla``: fla's name for chunked GLA (fla 0.6.0 only keeps the name and raises)."""

import torch

from fla.ops.gla.chunk import chunk_gla


def fused_chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA, as :func:`fla.ops.gla.chunk_gla` (same arguments, shapes and returns).

    fla 0.6.0 keeps ``fused_chunk_gla(**kwargs)`` only as a name that raises "use chunk_gla"; here it runs
    ``chunk_gla``, so code written against either works: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``,
    g ``[B, T, H, K]`` log decays -> (o ``[B, T, H, V]``, final state ``[N, H, K, V]`` or ``None``)."""
    return chunk_gla(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens)


__all__ = ["fused_chunk_gla"]
