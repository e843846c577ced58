"""``fused_chunk_linear_attn``: fla 0.6.0's name for its fused-chunk kernel of (normalized) linear attention.

Same maths, signature and state layout as :func:`fla.ops.linear_attn.chunk_linear_attn`, which serves it:
our chunk pipeline is the fast path for every length, so code written against fla's name runs unchanged.
"""

from __future__ import annotations

import torch

from fla.ops.linear_attn.chunk import chunk_linear_attn


def fused_chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | tuple | None = None,
    output_final_state: bool = False,
    normalize: bool = True,
    cu_seqlens: torch.Tensor | None = None,
):
    """Linear attention, as :func:`fla.ops.linear_attn.chunk_linear_attn` (see it for shapes and the
    ``(S [N, H, K, V], z [N, 1, H, K])`` state of ``normalize=True``)."""
    return chunk_linear_attn(q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens)
