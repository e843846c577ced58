"""Token shift (RWKV): each token's predecessor ``x_{t-1}``, zero at every sequence start (or, when decoding
continues a sequence, the last token of the previous call, kept in the cache).

Plain indexing in PyTorch (one ``cat`` and one ``where``), so autograd gives the backward and the same code
runs on CPU and GPU. Varlen batches (``cu_seqlens``) restart at each sequence: the first token of a sequence
reads the zero (or its sequence's cached token), never the last token of the sequence before it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fla.ops.utils.index import prepare_lens, prepare_position_ids, prepare_sequence_ids
from fla.utils import check_cu_seqlens, check_shape


def shift_tokens(
    x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, cache: torch.Tensor | None = None
) -> torch.Tensor:
    """``x_{t-1}`` for every token.

    Args:
        x: ``[B, T, D]`` (``[1, T, D]`` with ``cu_seqlens``).
        cu_seqlens: ``[N+1]`` packed sequence bounds.
        cache: ``[N, D]`` the token before each sequence (the previous call's last one), or ``None`` (zeros).
    Returns:
        ``[B, T, D]``: ``x`` moved one step later, each sequence starting with its ``cache`` row or zero.
    """
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if cache is not None:
        check_shape("cache", cache, (N, D), "[N, D] (one token per sequence)")
    first = x.new_zeros(B, 1, D) if cache is None or cu_seqlens is not None else cache[:, None].to(x.dtype)
    shifted = torch.cat([first, x[:, :-1]], 1)
    if cu_seqlens is None or T == 0:
        return shifted
    starts = (prepare_position_ids(cu_seqlens) == 0)[None, :, None]  # [1, T, 1]: first token of a sequence
    if cache is None:
        return shifted.masked_fill(starts, 0.0)
    return torch.where(starts, cache.to(x.dtype)[prepare_sequence_ids(cu_seqlens)][None], shifted)


def last_tokens(x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, cache: torch.Tensor | None = None):
    """The last token of each sequence, ``[N, D]`` (the next call's ``cache``); an empty sequence keeps its
    ``cache`` row (zero without one)."""
    if cu_seqlens is None:
        return x[:, -1] if x.shape[1] > 0 else (x.new_zeros(x.shape[0], x.shape[2]) if cache is None else cache)
    lens = prepare_lens(cu_seqlens)
    last = x[0, (cu_seqlens[1:].long() - 1).clamp(min=0)]  # [N, D]
    keep = x.new_zeros(last.shape) if cache is None else cache.to(x.dtype)
    return torch.where((lens > 0)[:, None], last, keep)


def token_shift(
    x: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    cache: torch.Tensor | None = None,
    output_cache: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """fla's ``token_shift``: the difference ``x_{t-1} - x_t`` ``[B, T, D]`` (see :func:`shift_tokens`).

    Args:
        x: ``[B, T, D]`` (``[1, T, D]`` with ``cu_seqlens``); cu_seqlens: ``[N+1]`` int32/int64 bounds.
        cache: ``[N, D]`` the token before each sequence (decoding), or ``None``.
        output_cache: also return the last token of each sequence ``[N, D]`` (the next call's ``cache``).
    """
    if x.dim() != 3:
        raise ValueError(f"x has shape {list(x.shape)}, expected [B, T, D]")
    check_cu_seqlens(cu_seqlens, total=x.shape[1], batch=x.shape[0])
    delta = shift_tokens(x, cu_seqlens, cache) - x
    if output_cache:
        return delta, last_tokens(x, cu_seqlens, cache)
    return delta


class TokenShift(nn.Module):
    """:func:`token_shift` as a module (no parameters): ``forward(x, cu_seqlens, cache, output_cache)``."""

    def forward(
        self,
        x: torch.Tensor,
        cu_seqlens: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        output_cache: bool = False,
    ):
        return token_shift(x, cu_seqlens, cache, output_cache)


__all__ = ["TokenShift", "last_tokens", "shift_tokens", "token_shift"]
