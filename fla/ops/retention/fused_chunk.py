"""``fused_chunk_retention``: fla's other kernel for retention; same maths and outputs as the chunk op."""

import torch

from fla.ops.retention.chunk import chunk_retention


def fused_chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention, as :func:`fla.ops.retention.chunk_retention` (fla 0.6.0's argument names and order).

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, initial_state ``[N, H, K, V]``, cu_seqlens ``[N+1]`` ->
    (o ``[B, T, H, V]``, final state ``[N, H, K, V]`` or ``None``)."""
    return chunk_retention(q, k, v, scale, initial_state, output_final_state, cu_seqlens)


__all__ = ["fused_chunk_retention"]
