"""LightNet attention over a context-parallel split.

LightNet normalizes its key logits by their running log-sum-exp ``z`` over the document and runs GLA on the
normalized keys with the decays ``z_{t-1} - z_t`` (:func:`fla.ops.lightnet.chunk_lightnet`). So the ranks first
agree on ``z``: each gathers every rank's log-sum-exp of its last piece's keys and folds the earlier ranks' with
``logaddexp`` (a document starting on a rank starts afresh) to the normalizer entering its first piece. With that
``z_0`` each rank has the same normalized keys and decays as the whole sequence, and the GLA state passes between
the ranks as for every chunk op (:func:`fla.context_parallel.cp_chunk_op`).
"""

from __future__ import annotations

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.normalizer import entering_log_normalizer
from fla.context_parallel.state import cp_chunk_op
from fla.ops.gla import chunk_gla
from fla.ops.lightnet.gate import lightnet_gates


def cp_lightnet(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor]]:
    """:func:`fla.ops.lightnet.chunk_lightnet` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q: ``[B, T_local, H, K]``; k: ``[B, T_local, H, K]`` key logits; v: ``[B, T_local, H, V]``.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``o [B, T_local, H, V]`` and ``(final state [N_local, H, K, V] or None, log normalizer [N_local, 1, H, K])``:
        what the op returns on the whole sequences, for this rank's tokens (a piece going on to the next rank:
        its states so far).
    """
    ctx.check_slice("q", q, cu_seqlens)
    z0 = entering_log_normalizer(ctx, k)  # [N_local, H, K]
    k, g, zt = lightnet_gates(k, z0[:, None], cu_seqlens, q.dtype)
    o, ht = cp_chunk_op(chunk_gla, ctx, q, k, v, g, scale=scale, output_final_state=output_final_state,
                        cu_seqlens=cu_seqlens)  # fmt: skip
    return o, (ht, zt)


__all__ = ["cp_lightnet"]
