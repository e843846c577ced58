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

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext
from fla.context_parallel.diagonal import check_call
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
    check_call(ctx, q, cu_seqlens)
    z_in = _entering_normalizer(ctx, k, cu_seqlens)  # [B or 1, H, K]
    pieces = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    rest = z_in.new_full((pieces - z_in.shape[0], *z_in.shape[1:]), float("-inf"))  # pieces that start here
    k, g, zt = lightnet_gates(k, torch.cat([z_in, rest])[:, None], cu_seqlens, q.dtype)
    o, ht = cp_chunk_op(chunk_gla, ctx, q, k, v, g, scale=scale, output_final_state=output_final_state,
                        cu_seqlens=cu_seqlens)  # fmt: skip
    return o, (ht, zt)


def _entering_normalizer(ctx: CPContext, k: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """The log-sum-exp of the key logits of this rank's first document on the earlier ranks, ``[B or 1, H, K]``
    float32 (``-inf`` where the document starts on this rank). Every rank's gathered sums stay in the graph (with
    a factor 0 where they do not count), so every rank's backward runs the gather's all-reduce."""
    kf = k.float()
    if cu_seqlens is not None:  # the last piece's tokens, masked on the device (no host sync)
        last = torch.arange(k.shape[1], device=k.device) >= cu_seqlens[-2]
        kf = kf.masked_fill(~last[None, :, None, None], float("-inf"))
    lse = gather_ranks(kf.logsumexp(1), ctx.group)  # [R, B or 1, H, K], finite: every piece has a token
    z = lse[0]
    for j in range(1, ctx.rank):
        z = torch.logaddexp(z, lse[j]) if ctx.single[j] and ctx.continues_in[j] else lse[j] + 0 * z
    return z if ctx.continues_in[ctx.rank] else float("-inf") + 0 * z


__all__ = ["cp_lightnet"]
