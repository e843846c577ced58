"""Linear attention over a context-parallel split, its output normalization included.

``chunk_linear_attn`` with ``normalize`` divides each output by ``scale * q_t . z_t`` where ``z_t`` is the running key
sum of the document (:mod:`fla.ops.linear_attn.utils`). The state ``S`` passes between the ranks as for every chunk op
(:func:`fla.context_parallel.cp_chunk_op`, the op without ``normalize``); the key sum is a second state whose transition
is the identity: each rank gathers its last piece's key sum, folds the earlier ranks' in order
(:func:`fla.context_parallel.state.entering_state`, ``M = 1``) to the sum entering its first piece, and normalizes with
it as that piece's ``z_0`` (:func:`fla.context_parallel.normalizer.entering_key_sums`; Based and ReBased normalize the
same way). Every step is a differentiable torch op, so the keys' gradients through the normalizer reach the ranks that
hold them.
"""

from __future__ import annotations

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.normalizer import entering_key_sums
from fla.context_parallel.state import cp_chunk_op
from fla.ops.common.inputs import default_scale
from fla.ops.linear_attn import chunk_linear_attn
from fla.ops.linear_attn.utils import apply_normalization


def cp_linear_attn(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    normalize: bool = True,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | tuple | None]:
    """:func:`fla.ops.linear_attn.chunk_linear_attn` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q, k: ``[B, T_local, H, K]``; v: ``[B, T_local, H, V]``; scale, normalize: as the op's.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``o [B, T_local, H, V]`` and the final states (``S [N_local, H, K, V]``, with ``normalize`` the pair
        ``(S, z [N_local, 1, H, K])``) or ``None``: what the op returns on the whole sequences, for this rank's
        tokens (a piece going on to the next rank: its state so far).
    """
    o, ht = cp_chunk_op(chunk_linear_attn, ctx, q, k, v, scale=scale, normalize=False,
                        output_final_state=output_final_state, cu_seqlens=cu_seqlens)  # fmt: skip
    if not normalize:
        return o, ht
    z0 = entering_key_sums(ctx, k)
    return apply_normalization(o, q, k, ht, z0, default_scale(scale, k), True, output_final_state, cu_seqlens)


__all__ = ["cp_linear_attn"]
