"""Gated Slot Attention over a context-parallel split.

GSA is two passes of gated linear attention around a softmax over the slots (:func:`fla.ops.gsa.chunk_gsa`):
``Hk_t = Hk_{t-1} diag(exp g_t) + k_t^T s_t`` (``[K, M]``) gives the slot scores ``ok_t = scale q_t Hk_t``, and
``Hv_t = diag(exp g_t) Hv_{t-1} + s_t^T v_t`` (``[M, V]``) the outputs ``o_t = softmax(ok_t) Hv_t``. Both gates
are diagonal in the slots, so each pass crosses the ranks as :mod:`.diagonal` says: run from zero states, gather
``[H_0 | prod exp g]``, fold the earlier ranks', and add the pass over the first piece from the entering state with
zero writes (``k = 0``, ``v = 0``). The softmax between the passes acts token by token, so it sees the whole
sequence's scores. ABC (:func:`cp_abc`) normalizes its slot logits by their running log-sum-exp, which gives its slot
gates: the ranks first agree on the log-sum-exp entering each first piece
(:func:`fla.context_parallel.normalizer.entering_log_normalizer`), then run GSA's passes with those gates.
"""

from __future__ import annotations

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.diagonal import diagonal_split
from fla.context_parallel.normalizer import entering_log_normalizer
from fla.ops.gsa.chunk import chunk_pass_k, chunk_pass_v
from fla.ops.gsa.gate import additive_gate
from fla.ops.gsa.inputs import gsa_two_pass


def cp_gsa(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """:func:`fla.ops.gsa.chunk_gsa` (with slot gates ``g``) on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q: ``[B, T_local, HQ, K]``; k: ``[B, T_local, H, K]``; v: ``[B, T_local, H, V]``;
            s, g: ``[B, T_local, H, M]``; scale: as the op's.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``o [B, T_local, HQ, V]`` and ``(Hk [N_local, H, K, M], Hv [N_local, H, M, V])`` or ``None``: what the op
        returns on the whole sequences, for this rank's tokens (a piece going on to the next rank: its states so far).
    """
    if g is None:
        raise ValueError("context parallel: cp_gsa needs the slot gates g (ABC's additive gate: cp_abc)")
    ctx.check_slice("q", q, cu_seqlens)
    first = ctx.first_piece

    def pass_k(q, k, s, g, scale, h0, output_final_state, cu_seqlens):
        ok, hk = chunk_pass_k(q, k, s, g, scale, None, True, cu_seqlens)
        M = torch.exp(first(g).float().sum(1))[..., None, :].expand(-1, -1, hk.shape[-2], -1)  # [B or 1, H, K, M]
        zeros = first(k).new_zeros(first(k).shape)
        correction = lambda h: chunk_pass_k(first(q), zeros, first(s), first(g), scale, h, False, None)[0]  # noqa: E731
        return diagonal_split(ctx, ok, hk, M, correction, output_final_state)

    def pass_v(qv, s, v, g, scale, h0, output_final_state, cu_seqlens):
        o, hv = chunk_pass_v(qv, s, v, g, scale, None, True, cu_seqlens)
        M = torch.exp(first(g).float().sum(1))[..., None].expand(-1, -1, -1, hv.shape[-1])  # [B or 1, H, M, V]
        zeros = first(v).new_zeros(first(v).shape)
        correction = lambda h: chunk_pass_v(first(qv), first(s), zeros, first(g), scale, h, False, None)[0]  # noqa: E731
        return diagonal_split(ctx, o, hv, M, correction, output_final_state)

    return gsa_two_pass(pass_k, pass_v, "chunk_gsa", q, k, v, s, g, scale, None, output_final_state, cu_seqlens)


def cp_abc(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
    """:func:`fla.ops.abc.chunk_abc` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q, k: ``[B, T_local, H, K]``; v: ``[B, T_local, H, V]``; s: ``[B, T_local, H, M]`` slot logits.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``o [B, T_local, H, V]`` and ``(Hk, Hv, z [N_local, H, M])`` or ``None``, as :func:`cp_gsa`.
    """
    ctx.check_slice("q", q, cu_seqlens)
    z0 = entering_log_normalizer(ctx, s)  # [N_local, H, M]; -inf: a piece that starts here
    s, g, zt = additive_gate(s, cu_seqlens, z0)
    # a first token without a carried normalizer keeps the (zero) state: decay 0, as chunk_abc without z0
    g = g.masked_fill(g == float("-inf"), 0.0)
    o, states = cp_gsa(ctx, q, k, v, s, g, output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    return o, (*states, zt) if output_final_state else None


__all__ = ["cp_abc", "cp_gsa"]
