"""Backward of the DPLR delta rule on the Triton path: the PyTorch chunked form recomputed under autograd.

The forward kernels (:mod:`.chunk_fwd`) keep no intermediates; the backward rebuilds the chunked form of
:func:`.naive.chunk_dplr_torch` on the inputs' device (the same maths, float32) and differentiates it, so every
gradient (``q, k, v, a, b, gk`` and the initial state) is exact to float32 rounding. It is not a Triton
kernel: its memory is that of the PyTorch chunked form (``[.., 16, 16, K]`` decay tensors per chunk).
"""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.naive import chunk_dplr_torch


def dplr_recompute_grads(
    inputs: tuple[torch.Tensor, ...],
    wants: tuple[bool, ...],
    scale: float,
    initial_state: torch.Tensor | None,
    want_dh0: bool,
    cu_seqlens: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor | None]:
    """Gradients of ``(o, ht)`` w.r.t. ``inputs = (q, k, v, a, b, gk)`` (``None`` where ``wants`` is False)
    and the initial state (when ``want_dh0``), each in its input's dtype."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(w) for x, w in zip(inputs, wants)]
        h0 = None if initial_state is None else initial_state.detach().requires_grad_(want_dh0)
        o, ht = chunk_dplr_torch(*leaves, scale, h0, cu_seqlens)
        targets = [x for x in (*leaves, h0) if x is not None and x.requires_grad]
        pairs = [(o, do)] + ([(ht, dht)] if dht is not None else [])
        pairs = [(y, dy.to(y.dtype)) for y, dy in pairs if y.requires_grad]  # an empty o (T = 0) has no graph
        if targets and pairs:
            ys, dys = zip(*pairs)
            got = iter(torch.autograd.grad(ys, targets, dys, allow_unused=True))
        else:
            got = iter([None] * len(targets))
    grads = []
    for x, leaf in zip(inputs, leaves):
        if not leaf.requires_grad:
            grads.append(None)
            continue
        g = next(got)
        grads.append(torch.zeros_like(x) if g is None else g.to(x.dtype))
    dh0 = None
    if h0 is not None and h0.requires_grad:
        g = next(got)
        dh0 = torch.zeros_like(initial_state) if g is None else g.to(initial_state.dtype)
    return tuple(grads), dh0


__all__ = ["dplr_recompute_grads"]
