"""The running normalizers of a document over a context-parallel split: what enters each rank's first piece.

Some layers normalize by a sum over the document so far, a state whose transition is the identity: linear attention,
Based and ReBased divide by ``q_t . z_t`` with ``z_t`` the running key sum; LightNet's keys and ABC's slots are
normalized by the running log-sum-exp of their logits. Each rank gathers its last piece's sum (or log-sum-exp) and folds
the earlier ranks' in order, restarting where a document starts, to the value entering its first piece.
"""

from __future__ import annotations

import torch

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext
from fla.context_parallel.state import entering_state


def entering_key_sums(ctx: CPContext, k: torch.Tensor) -> torch.Tensor:
    """The key sums entering each local piece, ``[N_local, 1, H, K]`` float32 (or wider): for the first piece (every
    row of a dense batch) the sum of its document's keys ``k [B, T_local, H, K]`` on the earlier ranks, 0 for the
    pieces that start on this rank. One all-gather of every rank's last-piece sum, folded with the identity as
    transition."""
    kf = k.to(torch.promote_types(k.dtype, torch.float32))
    last_piece = ctx.last_piece_mask(k)
    if last_piece is not None:
        kf = kf * last_piece.to(kf.dtype)[None, :, None, None]
    last = kf.sum(1)  # [B or 1, H, K]
    z_in = entering_state(ctx, last, torch.ones_like(last), transition=torch.mul)
    return ctx.per_piece(z_in, 0.0)[:, None]


def entering_log_normalizer(ctx: CPContext, x: torch.Tensor) -> torch.Tensor:
    """The log-sum-exp over time of the logits ``x [B, T_local, H, D]`` entering each local piece, ``[N_local, H, D]``
    float32: for the first piece (every row of a dense batch) over its document's tokens on the earlier ranks,
    ``-inf`` (an empty sum) for the pieces that start on this rank. Every rank's gathered sums stay in the graph
    (with a factor 0 where they do not count), so every rank's backward runs the gather's all-reduce."""
    xf = x.float()
    last_piece = ctx.last_piece_mask(x)
    if last_piece is not None:
        xf = xf.masked_fill(~last_piece[None, :, None, None], float("-inf"))
    lse = gather_ranks(xf.logsumexp(1), ctx.group)  # [R, B or 1, H, D], finite: every piece has a token
    z = lse[0]
    for j in range(1, ctx.rank):
        z = torch.logaddexp(z, lse[j]) if ctx.single[j] and ctx.continues_in[j] else lse[j] + 0 * z
    if not ctx.continues_in[ctx.rank]:
        # -inf through torch.where, not -inf + 0 * z: the normalizer's gradient at -inf is NaN (logcumsumexp's
        # backward), which where's backward drops and a product by 0 would keep
        z = torch.where(torch.zeros_like(z, dtype=torch.bool), z, float("-inf"))
    return ctx.per_piece(z, float("-inf"))


__all__ = ["entering_key_sums", "entering_log_normalizer"]
