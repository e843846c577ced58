"""Mamba's selective scan over a context-parallel split: the ranks' states meet in a scan, as in :mod:`.state`.

The scan's state ``h [Di, Ds]`` evolves with a diagonal transition, ``h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t``,
and its output ``y_t = (C_t . h_t + D x_t) silu(z_t)`` is linear in the state entering a slice. So a slice maps the
state entering it to ``h_end = M * h_in + h_0`` with ``M = exp(A sum_t dt_t)`` (elementwise, ``[Di, Ds]``), and
adds to its outputs what the scan gives from ``h_in`` with zero inputs. Each rank:

1. runs the scan on its pieces from zero states: ``y_0`` and ``h_0`` per piece;
2. gathers every rank's ``(h_0 of its last piece, M of its first piece)`` and folds them in rank order
   (:func:`fla.context_parallel.state.state_in` with an elementwise transition) to the state entering its first
   piece, ``h_in``;
3. runs the scan once more on its first piece with ``x = 0`` (no skip) from ``h_in``: ``C_t . (prod exp(dt A)) h_in``
   times ``silu(z_t)``, added to ``y_0`` (and its final state ``M h_in + h_0``).

Unlike the chunk ops' correction (a product with the transition's outputs), step 3 waits for the gather: the
correction is a scan over the first piece only. Every step is a differentiable torch op or the scan's own autograd,
so every gradient (``A``, ``dt``, ``dt_bias``, ``B``, ``C``, ``z`` included) flows across the ranks.
"""

from __future__ import annotations

import torch

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext
from fla.context_parallel.state import state_in
from fla.ops.mamba import chunk_selective_scan
from fla.ops.mamba.naive import discretize_dt


def cp_selective_scan(
    ctx: CPContext,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fla.ops.mamba.chunk_selective_scan` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; x, dt, z: ``[B, T_local, Di]``; B, C: ``[B, T_local, Ds]``; A, D, dt_bias, dt_softplus: as
            the op's.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``(y [B, T_local, Di], final states [N_local, Di, Ds] float32 or None)``: what the op returns on the whole
        sequences, for this rank's tokens (a piece going on to the next rank: its state so far).
    """
    if (cu_seqlens is None) != (ctx.cu_seqlens is None):
        raise ValueError("context parallel: cu_seqlens must be given exactly when the context is packed")
    if x.shape[1] != ctx.local_len:
        raise ValueError(f"context parallel: x has {x.shape[1]} tokens, the context's slice {ctx.local_len}")
    y, states = chunk_selective_scan(x, dt, A, B, C, D, z, dt_bias, dt_softplus, output_final_state=True,
                                     cu_seqlens=cu_seqlens)  # fmt: skip
    n = ctx.first_len
    first = (lambda t: t[:, :n]) if cu_seqlens is not None else (lambda t: t)
    # the first piece's transition: the product of its tokens' exp(dt_t A) = exp(A sum_t dt_t), [B or 1, Di, Ds]
    dt_sum = discretize_dt(first(dt), dt_bias, dt_softplus, torch.float32).sum(1)
    M = torch.exp(dt_sum[..., None] * A.float())
    last = states[-1:] if cu_seqlens is not None else states  # [B or 1, Di, Ds]
    # one gather of [h_0 | M] per rank; its first part reaches this rank's output on every rank (rank 0's with a
    # factor 0), so every rank's backward runs the gather's all-reduce
    Ds = last.shape[-1]
    both = gather_ranks(torch.cat([last.float(), M], dim=-1), ctx.group)
    h_in = state_in(ctx, both[..., :Ds], both[..., Ds:], transition=torch.mul)
    x0 = first(x).new_zeros(first(x).shape)
    corr, _ = chunk_selective_scan(x0, first(dt), A, first(B), first(C), None, None if z is None else first(z),
                                   dt_bias, dt_softplus, initial_state=h_in)  # fmt: skip
    if cu_seqlens is not None:
        y = torch.cat([y[:, :n] + corr, y[:, n:]], dim=1)
    else:
        y = y + corr
    if not output_final_state:
        return y, None
    head = M * h_in + states[: M.shape[0]]
    return y, torch.cat([head, states[M.shape[0] :]], dim=0)


__all__ = ["cp_selective_scan"]
