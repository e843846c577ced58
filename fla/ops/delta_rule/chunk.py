"""Chunked delta rule (DeltaNet): the training path.

Forward (each stage its own Triton kernel): gate cumsum (:mod:`fla.ops.common.cumsum`), WY solve
(:mod:`.wy`), state recurrence with the new values (:mod:`.chunk_h`), output
(:func:`fla.ops.common.chunk_o.chunk_fwd_o` on ``v_new``).

Backward: ``w, u`` from the saved ``Tm`` (:mod:`.wy`), ``h, v_new`` recomputed (:mod:`.chunk_h`),
the intra-chunk ``dv_new`` part (:func:`fla.ops.common.chunk_bwd.chunk_bwd_dv` without ``dh``), the
reverse state recurrence that also finishes ``dv_new`` (:func:`.chunk_h.chunk_delta_bwd_dh`),
``dq, dk, dw = -dv_new h^T, dL/dG`` (:func:`fla.ops.common.chunk_bwd.chunk_bwd_dqkwg`) and the WY
backward to ``dk, dv, dbeta`` and ``dg`` (:mod:`.wy_bwd`: it adds both stages' ``dL/dG`` and takes
the chunk-local reverse cumsum). The gate cumsum ``G`` is kept from the forward.
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_layout
from fla.ops.common.chunk_bwd import chunk_bwd_dqkwg, chunk_bwd_dv
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.layout import ChunkLayout
from fla.ops.delta_rule.chunk_h import chunk_delta_bwd_dh, chunk_delta_fwd_h
from fla.ops.delta_rule.inputs import expand_groups, prepare_delta_call, prepare_qk_beta
from fla.ops.delta_rule.naive import chunk_delta_rule_torch
from fla.ops.delta_rule.wy import chunk_delta_wy_fwd
from fla.ops.delta_rule.wy_bwd import chunk_delta_wy_bwd
from fla.utils import contiguous


def chunk_delta_rule_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    layout: ChunkLayout,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The Triton forward (contiguous inputs, options already applied; shapes as :func:`chunk_delta_rule`,
    ``g`` ``[B, T, H]`` or ``None``).

    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``), the final state ``[N, H, K, V]`` float32 or ``None``,
        ``Tm`` ``[B, T, H, BT]`` fp32 (the WY stage's inverses) and ``G`` ``[B, T, H]`` fp32 (the
        chunk-local gate cumsum, ``None`` when ungated), both kept for the backward.
    """
    G = None if g is None else chunk_local_cumsum(g, layout)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, G, layout)
    h, v_new, ht = chunk_delta_fwd_h(k, w, u, layout, G, initial_state, output_final_state)
    return chunk_fwd_o(q, k, v_new, h, layout, scale, g=G), ht, Tm, G


def chunk_delta_rule_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    Tm: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    layout: ChunkLayout,
    want_dh0: bool,
    G: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The Triton backward (contiguous inputs; ``Tm`` and ``G`` from :func:`chunk_delta_rule_fwd`, or
    ``None`` to redo the WY solve / the gate cumsum, as the recurrent op's backward does).

    Returns:
        ``dq, dk, dv`` (input dtypes), ``dbeta`` ``[B, T, H]`` float32, ``dg`` ``[B, T, H]``
        float32 (``None`` when ungated) and ``dh0`` ``[N, H, K, V]`` float32 (``None`` unless ``want_dh0``).
    """
    if G is None and g is not None:
        G = chunk_local_cumsum(g, layout)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, G, layout, Tm=Tm)
    h, v_new, _ = chunk_delta_fwd_h(k, w, u, layout, G, initial_state)
    dv_local = chunk_bwd_dv(q, k, do, None, layout, scale, g=G)
    dh, dh0, dv_new = chunk_delta_bwd_dh(q, k, w, do, dv_local, layout, scale, G, dht, want_dh0)
    dq, dk, dw, dG = chunk_bwd_dqkwg(q, k, v_new, h, do, dh, dv_new, layout, scale, g=G, want_dg=G is not None)
    dk, dv, dbeta, dg = chunk_delta_wy_bwd(k, v, beta, G, Tm, dw, dv_new, dk, layout, dG=dG)  # dg: finished
    return dq, dk, dv, dbeta, dg, dh0


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Triton chunked (gated) delta rule; gradients to q, k, v, beta, g and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, Tm, G = chunk_delta_rule_fwd(q, k, v, beta, g, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(q, k, v, beta, g, Tm, G, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, beta, g, Tm, G, initial_state = ctx.saved_tensors
        want_dh0 = initial_state is not None and ctx.needs_input_grad[6]
        dq, dk, dv, dbeta, dg, dh0 = chunk_delta_rule_bwd(
            q, k, v, beta, g, Tm, ctx.scale, initial_state, do, dht, ctx.layout, want_dh0, G=G
        )
        return dq, dk, dv, cast_like(dbeta, beta), cast_like(dg, g), None, cast_like(dh0, initial_state), None, None


def chunk_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of both ``chunk_(gated_)delta_rule`` ops (``g`` ``[B, T, H]`` or ``None``)."""
    beta, scale, backend = prepare_delta_call(q, k, v, beta, g, scale, initial_state, cu_seqlens)
    args = (q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)
    if backend == "torch":
        return chunk_delta_rule_torch(*args, use_qk_l2norm_in_kernel, allow_neg_eigval)
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval, backend)
    q, k = expand_groups(q, k, v)
    return ChunkDeltaRuleFunction.apply(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule, chunked: ``S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T``, ``o_t = scale q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` in ``(0, 1)`` (``None``: ones).
            Grouped value heads: v ``[B, T, HV, V]``, beta ``[B, T, HV]`` and states ``[N, HV, K, V]``
            with ``HV`` a multiple of ``H`` (value head ``j`` reads q/k head ``j // (HV / H)``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (float32 recommended).
        output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
        use_qk_l2norm_in_kernel: L2-normalize q and k inside (with its backward); keys should be
            unit-norm for the recurrence to be stable, so pass normalized keys or set this.
        allow_neg_eigval: use ``2 * beta`` (in ``(0, 2)``), so ``I - beta k k^T`` may have a
            negative eigenvalue.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    return chunk_delta(
        q, k, v, beta, None, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel,
        allow_neg_eigval,
    )  # fmt: skip
