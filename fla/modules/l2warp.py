"""RWKV's L2Wrap (fla's ``use_l2warp``): a gradient-only penalty on each token's largest logit.

The loss is returned unchanged; the backward adds to each row's largest logit the gradient of
``factor / 2 * max_v(logits)^2`` with ``factor = l2_penalty_factor / (B * T)`` (every position counted, ignored
labels included), scaled by the loss's upstream gradient. It keeps the logits small enough for bf16 without changing
the reported loss. :func:`fla.modules.linear_cross_entropy.linear_cross_entropy` applies the same term inside its
chunk loop (``l2_penalty_factor``) when the logits are never materialized.
"""

from __future__ import annotations

import torch


class L2WrapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: torch.Tensor, logits: torch.Tensor, l2_penalty_factor: float):
        # only the row maxima and their positions are kept, not the logits
        top, ids = logits.max(dim=-1, keepdim=True)
        rows = logits.numel() // max(logits.shape[-1], 1)
        ctx.save_for_backward(top * (l2_penalty_factor / max(rows, 1)), ids)
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        return loss

    @staticmethod
    def backward(ctx, dloss: torch.Tensor):
        scaled_top, ids = ctx.saved_tensors
        dlogits = torch.zeros(ctx.shape, dtype=ctx.dtype, device=scaled_top.device)
        dlogits.scatter_(-1, ids, (scaled_top * dloss).to(ctx.dtype))
        return dloss, dlogits, None


def l2_warp(loss: torch.Tensor, logits: torch.Tensor, l2_penalty_factor: float = 1e-4) -> torch.Tensor:
    """``loss`` (any shape, usually the reduced scalar) unchanged; its backward also reaches ``logits [..., V]``:
    ``l2_penalty_factor / rows * max(logits)`` at each row's argmax, times the loss's gradient (fla's ``l2_warp``).
    """
    return L2WrapFunction.apply(loss, logits, l2_penalty_factor)


__all__ = ["l2_warp"]
