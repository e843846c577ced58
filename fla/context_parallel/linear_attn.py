"""Linear attention over a context-parallel split, its output normalization included.

``chunk_linear_attn`` with ``normalize`` divides each output by ``scale * q_t . z_t`` where ``z_t`` is the running key
sum of the document (:mod:`fla.ops.linear_attn.utils`). The state ``S`` passes between the ranks as for every chunk op
(:func:`fla.context_parallel.cp_chunk_op`, the op without ``normalize``); the key sum is a second state whose transition
is the identity: each rank gathers its last piece's key sum, folds the earlier ranks' in order
(:func:`fla.context_parallel.state.entering_state`, ``M = 1``) to the sum entering its first piece, and normalizes with
it as that piece's ``z_0`` (:func:`entering_key_sums`; Based and ReBased normalize the same way). Every step is a
differentiable torch op, so the keys' gradients through the normalizer reach the ranks that hold them.
"""

from __future__ import annotations

import torch

from fla.context_parallel.context import CPContext
from fla.context_parallel.state import cp_chunk_op, entering_state
from fla.ops.common.inputs import default_scale
from fla.ops.linear_attn import chunk_linear_attn
from fla.ops.linear_attn.utils import apply_normalization


def cp_linear_attn(
    ctx: CPContext,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    normalize: bool = True,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | tuple | None]:
    """:func:`fla.ops.linear_attn.chunk_linear_attn` on this rank's slice of sequences split over ``ctx``.

    Args:
        ctx: the split; q, k: ``[B, T_local, H, K]``; v: ``[B, T_local, H, V]``; scale, normalize: as the op's.
        cu_seqlens: the local pieces' boundaries, ``ctx.cu_seqlens`` (``None`` for a dense batch).
    Returns:
        ``o [B, T_local, H, V]`` and the final states (``S [N_local, H, K, V]``, with ``normalize`` the pair
        ``(S, z [N_local, 1, H, K])``) or ``None``: what the op returns on the whole sequences, for this rank's
        tokens (a piece going on to the next rank: its state so far).
    """
    o, ht = cp_chunk_op(chunk_linear_attn, ctx, q, k, v, scale=scale, normalize=False,
                        output_final_state=output_final_state, cu_seqlens=cu_seqlens)  # fmt: skip
    if not normalize:
        return o, ht
    z0 = entering_key_sums(ctx, k, cu_seqlens)
    return apply_normalization(o, q, k, ht, z0, default_scale(scale, k), True, output_final_state, cu_seqlens)


def entering_key_sums(ctx: CPContext, k: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """The key sums entering each local piece, ``[N_local, 1, H, K]`` float32 (or wider): for the first piece (every
    row of a dense batch) the sum of its document's keys ``k [B, T_local, H, K]`` on the earlier ranks, 0 for the
    pieces that start on this rank. One all-gather of every rank's last-piece sum, folded with the identity as
    transition."""
    kf = k.to(torch.promote_types(k.dtype, torch.float32))
    if cu_seqlens is not None:  # the last piece's tokens, masked on the device (no host sync)
        kf = kf * (torch.arange(k.shape[1], device=k.device) >= cu_seqlens[-2]).to(kf.dtype)[None, :, None, None]
    last = kf.sum(1)  # [B or 1, H, K]
    z_in = entering_state(ctx, last, torch.ones_like(last), transition=torch.mul)
    pieces = k.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    return torch.cat([z_in, z_in.new_zeros(pieces - z_in.shape[0], *z_in.shape[1:])])[:, None]


__all__ = ["cp_linear_attn", "entering_key_sums"]
