"""A chunk op over a context-parallel split: every rank runs its slice, the ranks' states meet in a scan.

For the ops whose state ``S [K, V]`` evolves linearly in the state and the values together, with the transition
acting on the key side (``S_t = A_t S_{t-1} + k_t (beta_t v_t)^T``: GLA, simple GLA / RetNet, the delta rule and
its gated, KDA, DPLR kin; ``o_t = scale * S_t^T q_t``), a slice of a document maps the state entering it to
``S_end = M S_in + S_0`` and adds ``P S_in`` to its outputs, where ``S_0`` and the outputs with ``S_in = 0`` come
from the op itself, and ``M [K, K]``, ``P [T, K]`` from the op run on the same keys and gates with values 0 and
the identity as the initial state (its final state is ``M``, its output ``P``: both linear in ``S_in``). So each
rank runs the op twice on its slice, in parallel with the others (no rank waits for another's op):

1. ``o_0, S_0 = op(q, k, v, gates)`` on its pieces;
2. ``P, M = op(q, k, 0, gates, initial_state=I)`` on its first piece (the one a previous rank may continue);
3. gather every rank's ``(S_0 of its last piece, M)`` and fold them in rank order,
   ``S_end(j) = [rank j holds one piece and continues j-1] M_j S_end(j-1) + S_0(j)``, to the state entering
   this rank, ``S_in = [continues j-1] S_end(r-1)``;
4. ``o = o_0 + P S_in`` on the first piece (and its final state ``M S_in + S_0``).

Every step is a differentiable torch op (the gather's backward sums every rank's gradient of the states), so the
op's own backward gives every gradient, the state's included. Every rank takes every step, with 0 / 1 factors
where its flags say the state does not flow, so the ranks' autograd graphs (and their collectives) match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fla.context_parallel.comm import gather_ranks
from fla.context_parallel.context import CPContext


def cp_chunk_op(
    op: Callable,
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *gates: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``op(q, k, v, *gates, ...)`` on this rank's slice of sequences split over ``ctx`` (module docstring).

    Args:
        op: a public chunk op with fla's signature whose state evolves as the module docstring says.
        q, k: ``[B, T_local, H, K]``; v: ``[B, T_local, HV, V]`` (``[B, T_local, ..., HV, V]``: more per-token axes
            before the heads, e.g. an op's micro-steps); gates: the op's gate tensors, time at dim 1.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
        options: the op's keywords (``scale``, ...), passed to both calls.
    Returns:
        ``(o [B, T_local, HV, V], final states [N_local, HV, K, V] float32 or None)``: what the op returns on
        the whole sequences, for this rank's tokens.
    """
    if initial_state is not None:
        raise ValueError("context parallel: initial_state is not supported (the state comes from the ranks before)")
    ctx.check_slice("q", q, cu_seqlens)
    o, states = op(q, k, v, *gates, output_final_state=True, cu_seqlens=cu_seqlens, **options)
    # the first piece from the identity with zero values: its outputs P and transition M
    n = ctx.first_len
    K = k.shape[-1]
    first = ctx.first_piece
    zeros = v.new_zeros(*v.shape[:1], n, *v.shape[2:-1], K)
    eye = torch.eye(K, dtype=torch.float32, device=v.device).expand(zeros.shape[0], v.shape[-2], K, K)
    P, M = op(first(q), first(k), zeros, *(first(g) for g in gates), initial_state=eye.contiguous(),
              output_final_state=True, **options)  # fmt: skip
    s_in = entering_state(ctx, ctx.last_piece_states(states), M)
    corr = torch.einsum("bthk,bhkv->bthv", P.float(), s_in)
    head = torch.matmul(M, s_in) + states[: M.shape[0]] if output_final_state else None
    return with_entering_state(ctx, o, corr, states, head)


def with_entering_state(
    ctx: CPContext, o: torch.Tensor, corr: torch.Tensor, states: torch.Tensor, head: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An op's results on this rank's pieces from zero states, with the state entering the first piece in.

    Args:
        o: its outputs ``[B, T_local, ..]``; corr: what the entering state adds to the first piece's outputs,
            ``[B or 1, first_len, ..]``; states: its final states ``[N_local, ..]``; head: the first piece's final
            states from the entering state, ``[B or 1, ..]``, or ``None`` when they are not asked for.
    Returns:
        ``(o, final states or None)``.
    """
    if ctx.cu_seqlens is not None:
        n = ctx.first_len
        o = torch.cat([o[:, :n] + corr.to(o.dtype), o[:, n:]], dim=1)
    else:
        o = o + corr.to(o.dtype)
    return o, None if head is None else torch.cat([head, states[head.shape[0] :]], dim=0)


def entering_state(
    ctx: CPContext, last: torch.Tensor, M: torch.Tensor, transition: Callable = torch.matmul
) -> torch.Tensor:
    """The state entering this rank's first piece (float32, ``last``'s shape), from this rank's zero-start final
    state of its last piece ``last [B or 1, .., V]`` and transition of its first piece ``M [B or 1, .., K]`` (same
    leading dimensions): one all-gather of ``[last | M]``, folded in rank order by :func:`state_in`. The gathered
    ``last`` reaches this rank's output on every rank (rank 0's with a factor 0), so every rank's backward runs
    the gather's all-reduce."""
    both = gather_ranks(torch.cat([last.float(), M.float()], dim=-1), ctx.group)
    return state_in(ctx, both[..., : last.shape[-1]], both[..., last.shape[-1] :], transition)


def state_in(ctx: CPContext, last: torch.Tensor, M: torch.Tensor, transition: Callable = torch.matmul) -> torch.Tensor:
    """The state entering this rank's first piece, ``[B or 1, ..]`` float32, from every rank's zero-start final
    state of its last piece ``last [R, B or 1, ..]`` and transition of its first piece ``M [R, ..]``, applied as
    ``transition(M_j, S)`` (a matrix ``[.., K, K]`` times the state by default; the selective scan's is diagonal)."""
    s_end = last[0]
    for j in range(1, ctx.rank):
        flows = float(ctx.single[j] and ctx.continues_in[j])
        s_end = flows * transition(M[j], s_end) + last[j]
    return float(ctx.continues_in[ctx.rank]) * s_end


__all__ = ["cp_chunk_op", "entering_state", "state_in", "with_entering_state"]
