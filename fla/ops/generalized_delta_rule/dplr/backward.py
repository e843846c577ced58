"""Backward of the DPLR delta rule on the Triton path (both public ops).

Head dims up to :data:`.chunk_bwd.DPLR_BWD_MAX_DIM`: the Triton backward kernels (:mod:`.chunk_bwd`). Wider heads:
the PyTorch chunked form (:func:`.naive.chunk_dplr_torch`) recomputed on the inputs' device under autograd (the
same maths in float32; its memory is that of the PyTorch form, ``[.., 16, 16, K]`` decay tensors per chunk).
"""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.chunk_bwd import DPLR_BWD_MAX_DIM, DPLRForwardState, chunk_dplr_bwd
from fla.ops.generalized_delta_rule.dplr.naive import chunk_dplr_torch


def has_triton_backward(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the Triton backward kernels hold the head dims of ``q [.., K]`` and ``v [.., V]`` (else
    :func:`dplr_recompute_grads`)."""
    return max(q.shape[-1], v.shape[-1]) <= DPLR_BWD_MAX_DIM


def dplr_grads(
    inputs: tuple[torch.Tensor, ...],
    wants: tuple[bool, ...],
    scale: float,
    initial_state: torch.Tensor | None,
    want_dh0: bool,
    cu_seqlens: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    kept: DPLRForwardState | None = None,
) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor | None]:
    """Gradients of ``(o, ht)`` w.r.t. ``inputs = (q, k, v, a, b, gk)`` (``None`` where ``wants`` is False) and
    the initial state (when ``want_dh0``), each in its input's dtype: the Triton kernels (from ``kept``, what the
    forward kept, or recomputing it), or :func:`dplr_recompute_grads` for head dims past :data:`DPLR_BWD_MAX_DIM`."""
    q, v = inputs[0], inputs[2]
    if not has_triton_backward(q, v):
        return dplr_recompute_grads(inputs, wants, scale, initial_state, want_dh0, cu_seqlens, do, dht)
    want_dh0 = want_dh0 and initial_state is not None
    dq, dk, dv, da, db, dgk, dh0 = chunk_dplr_bwd(
        *inputs,
        scale,
        initial_state,
        do.contiguous(),
        None if dht is None else dht.contiguous(),
        cu_seqlens,
        want_dh0,
        kept,
    )
    grads = tuple(g.to(x.dtype) if w else None for g, x, w in zip((dq, dk, dv, da, db, dgk), inputs, wants))
    return grads, None if dh0 is None else dh0.to(initial_state.dtype)


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


__all__ = ["dplr_grads", "dplr_recompute_grads", "has_triton_backward"]
