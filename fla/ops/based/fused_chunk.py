"""``fused_chunk_based``: Based linear attention (fla 0.6.0's chunked API; same maths as ``parallel_based``)."""

import torch

from fla.ops.based.common import based_attention


def fused_chunk_based(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    use_norm: bool = True,
) -> torch.Tensor:
    """Based, as :func:`fla.ops.based.parallel_based`: q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` ->
    o ``[B, T, H, V]`` (``q.dtype``)."""
    return based_attention(q, k, v, scale, use_norm, "fused_chunk_based")


__all__ = ["fused_chunk_based"]
