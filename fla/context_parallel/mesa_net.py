"""MesaNet over a context-parallel split.

MesaNet's output solves a linear system with its state per token, ``o_t = (H^kv_t)^T (H^kk_t + diag(lamb))^{-1} q_t``
(:func:`fla.ops.mesa_net.chunk_mesa_net`), so it is not linear in the state entering a slice and the chunk ops'
correction does not apply. Its states are, though: ``H_t = exp(g_t) H_{t-1} + beta_t k_t (k_t | v_t)^T``, a scalar
decay per head. So the ranks agree on the states first and then run the op once from them:

1. each rank sums its last piece's zero-start states directly, ``sum_t exp(G_end - G_t) beta_t k_t (k_t | v_t)^T``
   (``G`` the cumulative log decay; a ``[K, K + V]`` product per token, no solve), and its first piece's
   transition ``exp(sum_t g_t)``;
2. one all-gather of ``[H_0 | M]``, folded in rank order (:func:`fla.context_parallel.state.entering_state`) to the
   states entering its first piece;
3. the op on its pieces, the first one from those states. Every step is differentiable (the op's own backward gives
   the entering states' gradients), so every gradient reaches the ranks that hold its tokens.
"""

from __future__ import annotations

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.state import entering_state
from fla.ops.common.inputs import l2norm
from fla.ops.mesa_net import chunk_mesa_net


def cp_mesa_net(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    lamb: torch.Tensor,
    output_final_state: bool = False,
    max_CG_iteration: int = 30,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`fla.ops.mesa_net.chunk_mesa_net` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q, k: ``[B, T_local, H, K]``; v: ``[B, T_local, H, V]``; g, beta: ``[B, T_local, H]``;
            lamb, max_CG_iteration, use_qk_l2norm_in_kernel: as the op's.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``(o [B, T_local, H, V], H^kk [N_local, H, K, K], H^kv [N_local, H, K, V])`` (the states ``None`` unless
        ``output_final_state``): what the op returns on the whole sequences, for this rank's tokens.
    """
    ctx.check_slice("q", q, cu_seqlens)
    K = k.shape[-1]
    kn = (l2norm(k) if use_qk_l2norm_in_kernel else k).float()
    gf = g.float()
    # the last piece's zero-start states: token t weighs exp(G_end - G_t) beta_t (0 before the last piece)
    w = torch.exp(gf.sum(1, keepdim=True) - gf.cumsum(1)) * beta.float()  # [B, T, H]
    last_piece = ctx.last_piece_mask(w)
    if last_piece is not None:
        w = w * last_piece.to(w.dtype)[None, :, None]
    last = torch.einsum("bth,bthk,bthd->bhkd", w, kn, torch.cat([kn, v.float()], -1))  # [B or 1, H, K, K + V]
    M = torch.exp(ctx.first_piece(gf).sum(1))[..., None, None]  # [B or 1, H, 1, 1]
    h_in = entering_state(ctx, last, M.expand(-1, -1, K, 1), transition=torch.mul)  # [B or 1, H, K, K + V]
    h0 = ctx.per_piece(h_in, 0.0)  # the pieces that start on this rank: from zero states
    return chunk_mesa_net(q, k, v, g, beta, lamb, h0[..., :K].contiguous(), h0[..., K:].contiguous(),
                          output_final_state=output_final_state, max_CG_iteration=max_CG_iteration,
                          use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=cu_seqlens)  # fmt: skip


__all__ = ["cp_mesa_net"]
