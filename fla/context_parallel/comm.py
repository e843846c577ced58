"""The one collective of context parallelism, differentiable: every rank's tensor, gathered in rank order."""

from __future__ import annotations

import torch
import torch.distributed as dist


class _GatherRanks(torch.autograd.Function):
    """Forward: all-gather ``x`` over ``group`` into ``[R, *x.shape]``. Backward: each rank's gradient of the whole
    stack, summed over the ranks (one all-reduce), then this rank's slice: the gradient of every rank's loss with
    respect to this rank's ``x``. An all-reduce rather than a reduce-scatter so that gloo (CPU) runs it too; the
    tensors gathered here are states and halos, small beside the activations."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        x = x.contiguous()
        out = torch.empty((world, *x.shape), dtype=x.dtype, device=x.device)
        dist.all_gather(list(out.unbind(0)), x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def gather_ranks(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """``x`` of every rank of ``group``, stacked in rank order: ``[R, *x.shape]`` (the same shape on every rank),
    with gradients flowing back to each rank's ``x`` (see :class:`_GatherRanks`)."""
    return _GatherRanks.apply(x, group)


__all__ = ["gather_ranks"]
