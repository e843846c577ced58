"""The inputs a rank's short convolutions read across the boundary with the previous rank (context parallel)."""

from __future__ import annotations

import torch

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext


def previous_tail(x: torch.Tensor, width: int, ctx: CPContext) -> torch.Tensor:
    """The last ``width`` tokens of the previous rank's ``x [B, T_local, ...]`` that belong to this rank's first
    document, ``[B, width, ...]``: 0 where the document had not begun (and on rank 0). Differentiable: the
    gradient of the tail goes back to the previous rank's ``x``."""
    if x.shape[1] < width:
        raise ValueError(f"context parallel: a slice of {x.shape[1]} tokens is shorter than the halo of {width}")
    tails = gather_ranks(x[:, x.shape[1] - width :], ctx.group)  # [R, B, width, ...]
    tail = tails[max(ctx.rank - 1, 0)]
    keep = min(width, ctx.carried[ctx.rank]) if ctx.continues_in[ctx.rank] else 0
    mask = torch.arange(width, device=x.device) >= width - keep  # the last `keep` positions
    return tail * mask.view(1, width, *([1] * (x.dim() - 2))).to(tail.dtype)


def earlier_tokens(x: torch.Tensor, ctx: CPContext) -> torch.Tensor:
    """The tokens of this rank's first document that lie on earlier ranks, from every rank's ``x [B, T_local, ...]``:
    ``[B, carried, ...]`` (empty when the document starts on this rank). Differentiable: their gradients go back to
    the ranks that hold them. The gather runs on every rank and its output is in the graph even where the slice is
    empty, so every rank's backward runs the gather's all-reduce."""
    start, carried = ctx.rank * x.shape[1], ctx.carried[ctx.rank]
    every = gather_ranks(x, ctx.group).transpose(0, 1).flatten(1, 2)  # [B, R * T_local, ...] along time
    return every[:, start - carried : start]


def conv_with_halo(conv: torch.nn.Module, x: torch.Tensor, ctx: CPContext, cu_seqlens: torch.Tensor | None):
    """A :class:`fla.modules.conv.ShortConvolution` (kernel ``W``) on this rank's ``x [B, T_local, D]`` as on the
    whole sequences: the previous rank's last ``W - 1`` inputs of the document go in front (:func:`previous_tail`),
    its outputs are dropped. ``cu_seqlens``: the local pieces (the first one grows by ``W - 1``)."""
    width = conv.kernel_size[0] - 1
    if width == 0:
        return conv(x, cu_seqlens=cu_seqlens)[0]
    ext = torch.cat([previous_tail(x, width, ctx), x], dim=1)
    if cu_seqlens is not None:
        cu_seqlens = torch.cat([cu_seqlens[:1], cu_seqlens[1:] + width])
    return conv(ext, cu_seqlens=cu_seqlens)[0][:, width:]


def token_shift_with_halo(x: torch.Tensor, ctx: CPContext, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """:func:`fla.modules.token_shift.token_shift` (``x_{t-1} - x_t``) of this rank's ``x [B, T_local, D]`` as on
    the whole sequences: the first token's predecessor is the previous rank's last token when its document goes on
    (:func:`previous_tail`), else 0. ``cu_seqlens``: the local pieces."""
    from fla.modules.token_shift import token_shift

    ext = torch.cat([previous_tail(x, 1, ctx), x], dim=1)
    if cu_seqlens is not None:
        cu_seqlens = torch.cat([cu_seqlens[:1], cu_seqlens[1:] + 1])
    return token_shift(ext, cu_seqlens)[:, 1:]


__all__ = ["conv_with_halo", "earlier_tokens", "previous_tail", "token_shift_with_halo"]
