"""Recurrences with a diagonal transition over a context-parallel split: Mamba's selective scan and HGRN. The ranks'
states meet in a scan, as in :mod:`.state`.

The state evolves elementwise, ``h_t = a_t * h_{t-1} + u_t`` (Mamba: ``h [Di, Ds]``, ``a_t = exp(dt_t A)``,
``u_t = dt_t B_t x_t``; HGRN: ``h [D]``, ``a_t = exp(g_t)``, ``u_t = x_t``), and the output is linear in the state
entering a slice. So a slice maps the state entering it to ``h_end = M * h_in + h_0`` with ``M = prod_t a_t``
(one factor per state element), and adds to its outputs what the op gives from ``h_in`` with zero inputs. Each
rank:

1. runs the op on its pieces from zero states: ``y_0`` and ``h_0`` per piece;
2. gathers every rank's ``(h_0 of its last piece, M of its first piece)`` and folds them in rank order
   (:func:`fla.context_parallel.state.entering_state` with an elementwise transition) to the state entering its
   first piece, ``h_in``;
3. runs the op once more on its first piece with zero inputs from ``h_in`` (Mamba: ``C_t . (prod a) h_in`` times
   ``silu(z_t)``, no skip; HGRN: ``(prod a) h_in``) and adds it to ``y_0`` (its final state: ``M h_in + h_0``).

Unlike the chunk ops' correction (a product with the transition's outputs), step 3 waits for the gather: the
correction is the op over the first piece only. Every step is a differentiable torch op or the op's own autograd,
so every gradient (the gates and Mamba's ``A``, ``dt_bias``, ``B``, ``C``, ``z`` included) flows across the ranks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.state import entering_state, with_entering_state
from fla.ops.hgrn import chunk_hgrn
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
    ctx.check_slice("x", x, cu_seqlens)
    y, states = chunk_selective_scan(x, dt, A, B, C, D, z, dt_bias, dt_softplus, output_final_state=True,
                                     cu_seqlens=cu_seqlens)  # fmt: skip
    first = ctx.first_piece
    # the first piece's transition: prod_t exp(dt_t A) = exp(A sum_t dt_t), [B or 1, Di, Ds]
    dt_sum = discretize_dt(first(dt), dt_bias, dt_softplus, torch.float32).sum(1)
    M = torch.exp(dt_sum[..., None] * A.float())
    zeros, z1 = first(x).new_zeros(first(x).shape), None if z is None else first(z)

    def correction(h_in: torch.Tensor) -> torch.Tensor:
        return chunk_selective_scan(zeros, first(dt), A, first(B), first(C), None, z1, dt_bias, dt_softplus,
                                    initial_state=h_in)[0]  # fmt: skip

    return diagonal_split(ctx, y, states, M, correction, output_final_state)


def cp_hgrn(
    ctx: CPContext,
    x: torch.Tensor,
    g: torch.Tensor,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fla.ops.hgrn.chunk_hgrn` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; x, g: ``[B, T_local, D]`` (``g``: log forget gates).
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``(o [B, T_local, D], final states [N_local, D] float32 or None)``: what the op returns on the whole
        sequences, for this rank's tokens (a piece going on to the next rank: its state so far).
    """
    ctx.check_slice("x", x, cu_seqlens)
    o, states = chunk_hgrn(x, g, output_final_state=True, cu_seqlens=cu_seqlens)
    first = ctx.first_piece
    M = torch.exp(first(g).float().sum(1))  # [B or 1, D]
    zeros = first(x).new_zeros(first(x).shape)
    correction = lambda h_in: chunk_hgrn(zeros, first(g), initial_state=h_in)[0]  # noqa: E731
    return diagonal_split(ctx, o, states, M, correction, output_final_state)


def diagonal_split(
    ctx: CPContext,
    y: torch.Tensor,
    states: torch.Tensor,
    M: torch.Tensor,
    correction: Callable[[torch.Tensor], torch.Tensor],
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Steps 2-3 of the module docstring for an op already run on this rank's pieces from zero states.

    Args:
        y: its outputs ``[B, T_local, ..]``; states: its final states ``[N_local, ..]``.
        M: the first piece's transition, elementwise: the states' shape with ``B`` (dense) or 1 (packed) rows.
        correction: ``h_in -> `` the op's outputs over the first piece from the entering state ``h_in`` with zero
            inputs, ``[B or 1, first_len, ..]``.
    Returns:
        ``(y, final states or None)`` with the earlier ranks' state in.
    """
    h_in = entering_state(ctx, ctx.last_piece_states(states), M, transition=torch.mul)
    head = M * h_in + states[: M.shape[0]] if output_final_state else None
    return with_entering_state(ctx, y, correction(h_in), states, head)


__all__ = ["cp_hgrn", "cp_selective_scan", "diagonal_split"]
