"""Chunked RWKV6: the training path, built on the GLA family's chunk stages (:mod:`fla.ops.common`).

With ``G`` the chunk-local inclusive cumsum of ``w`` and ``Gq = G - w`` the exclusive one:

* states ``h``: the GLA recurrence with ``gk = G`` (:func:`fla.ops.common.chunk_h.chunk_fwd_h`);
* scores ``A``: the vector-gate stage in its strict form, queries decayed by ``Gq`` (``chunk_gk_fwd_A(gq=Gq)``),
  plus the bonus on the diagonal, ``A_ii = scale * (r_i * u) . k_i`` (:func:`add_bonus_diagonal`);
* output: the GLA output stage with ``gk = Gq`` (the queries' decay of the carried state) and that ``A``.

Backward: ``dh`` with the queries' gate ``Gq``, ``dv`` from ``A`` (the bonus included), strict ``dA`` and
intra ``dr, dk``, then ``dr, dk, dw`` (``gq`` path) from the shared stages; the bonus' own gradients
(``dr, dk, du``) are added by one kernel (:mod:`fla.ops.rwkv6.bonus`).
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_layout
from fla.ops.common.chunk_bwd import chunk_bwd_dqkg, chunk_bwd_dv
from fla.ops.common.chunk_h import chunk_bwd_dh, chunk_fwd_h
from fla.ops.common.chunk_intra_gk import chunk_gk_bwd_dA, chunk_gk_bwd_intra, chunk_gk_fwd_A
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.layout import ChunkLayout
from fla.ops.rwkv6.bonus import add_bonus_diagonal, finish_bonus_grads
from fla.ops.rwkv6.inputs import prepare_rwkv6_call
from fla.ops.rwkv6.naive import naive_chunk_rwkv6
from fla.utils.backend import dispatch
from fla.utils.tensors import contiguous


def rwkv6_gates(w: torch.Tensor, layout: ChunkLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, Gq)`` float32 ``[B, T, H, K]``: the chunk-local inclusive and exclusive cumsums of ``w``."""
    return chunk_local_cumsum(w, layout, exclusive=True)


def chunk_rwkv6_fwd(r, k, v, w, u, scale, initial_state, output_final_state, layout):
    """Forward: ``o [B, T, H, V]`` (``v.dtype``), the final state (or ``None``) and ``A`` (kept for the backward)."""
    G, Gq = rwkv6_gates(w, layout)
    h, ht = chunk_fwd_h(k, v, layout, gk=G, h0=initial_state, output_final_state=output_final_state)
    A = add_bonus_diagonal(chunk_gk_fwd_A(r, k, G, layout, scale, v.dtype, gq=Gq), r, k, u, scale, layout)
    o = chunk_fwd_o(r, k, v, h, layout, scale, gk=Gq, A=A)
    return o, ht, A


def chunk_rwkv6_bwd(r, k, v, w, u, A, scale, initial_state, do, dht, layout, want_dw, want_dh0):
    """Backward: ``dr, dk, dv`` (input dtypes), ``dw``, ``du`` float32 and ``dh0`` (or ``None``);
    ``A``: the forward's scores (recomputed when ``None``)."""
    G, Gq = rwkv6_gates(w, layout)
    if A is None:
        A = add_bonus_diagonal(chunk_gk_fwd_A(r, k, G, layout, scale, v.dtype, gq=Gq), r, k, u, scale, layout)
    h, _ = chunk_fwd_h(k, v, layout, gk=G, h0=initial_state)
    dh, dh0 = chunk_bwd_dh(r, do, layout, gk=G, gq=Gq, dht=dht, scale=scale, want_dh0=want_dh0)
    dv = chunk_bwd_dv(r, k, do, dh, layout, scale, gk=G, A=A)
    dA = chunk_gk_bwd_dA(v, do, layout, scale, strict=True)
    dr_intra, dk_intra = chunk_gk_bwd_intra(r, k, G, dA, layout, gq=Gq)
    dr, dk, dw = chunk_bwd_dqkg(
        r, k, v, h, do, dh, layout, scale, gk=G, gq=Gq, dq_intra=dr_intra, dk_intra=dk_intra, want_dg=want_dw,
        dg_dtype=torch.float32,
    )  # fmt: skip
    dr, dk, du = finish_bonus_grads(r, k, v, u, do, dr, dk, scale, layout)
    return dr, dk, dv, dw, du, dh0


class ChunkRWKV6Function(torch.autograd.Function):
    """The Triton chunk pipeline of RWKV6; gradients to ``r, k, v, w, u`` and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(r, cu_seqlens)
        o, ht, A = chunk_rwkv6_fwd(r, k, v, w, u, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(r, k, v, w, u, A, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        r, k, v, w, u, A, initial_state = ctx.saved_tensors
        dr, dk, dv, dw, du, dh0 = rwkv6_grads(
            r, k, v, w, u, A, ctx.scale, initial_state, do, dht, ctx.layout, ctx.needs_input_grad
        )
        return dr, dk, dv, dw, du, None, dh0, None, None


def rwkv6_grads(r, k, v, w, u, A, scale, initial_state, do, dht, layout, wants):
    """:func:`chunk_rwkv6_bwd` for an autograd Function (``wants``: ``needs_input_grad`` of
    ``(r, k, v, w, u, scale, initial_state, ...)``): every gradient in its input's dtype."""
    want_dh0 = wants[6] and initial_state is not None
    dr, dk, dv, dw, du, dh0 = chunk_rwkv6_bwd(
        r, k, v, w, u, A, scale, initial_state, do, dht, layout, wants[3], want_dh0
    )
    return (
        cast_like(dr, r), cast_like(dk, k), cast_like(dv, v), cast_like(dw, w), cast_like(du, u),
        cast_like(dh0, initial_state),
    )  # fmt: skip


def chunk_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RWKV6, chunked: ``o_t = scale * r_t (S_{t-1} + diag(u) k_t^T v_t)``,
    ``S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t``.

    Args:
        r, k: ``[B, T, H, K]`` receptance (queries) and keys; v: ``[B, T, H, V]``.
        w: ``[B, T, H, K]`` log decays (``<= 0``; RWKV6 layers pass ``-exp(.)``).
        u: ``[H, K]`` the bonus of the current token.
        scale: default ``K ** -0.5`` (RWKV6 layers pass 1).
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
        cu_seqlens_cpu: accepted for fla's signature (unused); kwargs: fla's ``chunk_size`` (must be 64 or
            absent) and nothing else.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    check_kwargs("chunk_rwkv6", kwargs)
    scale = prepare_rwkv6_call(r, k, v, w, u, scale, initial_state, cu_seqlens)
    args = (r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch((r, k, v, w, u, initial_state), naive_chunk_rwkv6, ChunkRWKV6Function.apply, *args)


def check_kwargs(op: str, kwargs: dict) -> None:
    """fla's extra keywords: ``chunk_size`` (64 or ``None``: the pipeline's chunk) is accepted, others raise."""
    chunk_size = kwargs.pop("chunk_size", None)
    if chunk_size not in (None, 64):
        raise ValueError(f"{op}: chunk_size={chunk_size} is not supported (the chunk pipeline uses 64)")
    if "head_first" in kwargs:
        raise ValueError(f"{op}: head_first was removed; inputs are [B, T, H, ...]")
    if kwargs:
        raise TypeError(f"{op}: unexpected keyword arguments {sorted(kwargs)}")
