"""The chunk pipeline of the delta-rule family (delta rule, gated delta rule), assembled from the shared stages.

Forward (each stage its own Triton kernel): gate cumsum (:mod:`fla.ops.common.cumsum`), ``k k^T`` scores
and WY solve (:mod:`fla.ops.common.wy`), delta state recurrence with the new values
(:mod:`fla.ops.common.chunk_delta_h`), output (:func:`fla.ops.common.chunk_o.chunk_fwd_o` on ``v_new``).

Backward: ``w, u`` from the saved ``Tm`` (:mod:`fla.ops.common.wy`), ``h, v_new`` recomputed
(:mod:`fla.ops.common.chunk_delta_h`), the intra-chunk ``dv_new`` part
(:func:`fla.ops.common.chunk_bwd.chunk_bwd_dv` without ``dh``), the reverse state recurrence that also
finishes ``dv_new`` (:func:`fla.ops.common.chunk_delta_h.chunk_delta_bwd_dh`), ``dq, dk, dw = -dv_new h^T,
dL/dG`` (:func:`fla.ops.common.chunk_bwd.chunk_bwd_dqkwg`) and the WY backward to ``dk, dv, dbeta`` and
``dg`` (:mod:`fla.ops.common.wy_bwd`: it adds both stages' ``dL/dG`` and takes the chunk-local reverse
cumsum). The gate cumsum ``G`` is kept from the forward.

Gate kinds: ``g=None`` (delta rule), a scalar per-head log gate ``g [B, T, H]`` (gated delta rule) or a
per-key-channel log gate ``gk [B, T, H, K]`` (KDA). With ``gk`` the ``k k^T`` scores and the output scores
come from the vector-gate scores stage (:func:`fla.ops.common.chunk_intra_gk.chunk_gk_fwd_A`), the intra-chunk
``dq, dk`` from its backward, and the WY backward takes the ``gk`` branch (see ``README.md``).
Erase keys (Comba): ``p [B, T, H, K]`` reads the state before the token's decay, ``S_t = exp(g_t) S_{t-1} +
beta_t k_t (v_t - p_t^T S_{t-1})^T``; only the WY stage sees it (rows ``p`` with gate ``G - g``), the state
and output stages are the gated delta rule's. ``p`` goes with ``g`` or no gate, not with ``gk``.
:class:`ChunkDeltaRuleFunction` is the family's autograd Function and :func:`chunk_delta` the body of its
public ``chunk_<op>``s.
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_layout
from fla.ops.common.chunk_bwd import chunk_bwd_dqkwg, chunk_bwd_dv
from fla.ops.common.chunk_delta_h import chunk_delta_bwd_dh, chunk_delta_fwd_h
from fla.ops.common.chunk_intra_gk import chunk_gk_bwd_dA, chunk_gk_bwd_intra, chunk_gk_fwd_A
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.chunk_torch import check_erase_gate, chunk_delta_torch_op
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.inputs import expand_groups, prepare_delta_call, prepare_qk_beta
from fla.ops.common.l2norm import l2norm_triton
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.wy import chunk_delta_wy_fwd
from fla.ops.common.wy_bwd import chunk_delta_wy_bwd
from fla.utils import contiguous
from fla.utils.backend import dispatch


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
    *,
    gk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
    return_scores: bool = False,
) -> tuple[torch.Tensor | None, ...]:
    """The Triton forward (contiguous inputs, options already applied; shapes as :func:`chunk_delta_rule`,
    ``g`` ``[B, T, H]``, ``gk`` ``[B, T, H, K]`` or neither; ``p`` ``[B, T, H, K]`` Comba's erase keys or
    ``None``, not with ``gk``).

    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``), the final state ``[N, H, K, V]`` float32 or ``None``,
        ``Tm`` ``[B, T, H, BT]`` fp32 (the WY stage's inverses) and ``G`` fp32 (the chunk-local gate
        cumsum, shaped like the gate, ``None`` when ungated), both kept for the backward; with
        ``return_scores`` also the output stage's scores ``Aqk`` ``[B, T, H, BT]`` (``v.dtype``) of the
        per-key-channel gate (``None`` for the other gates), which its backward then need not recompute.
    """
    check_erase_gate(gk, p)
    if gk is not None:
        Gk = chunk_local_cumsum(gk, layout)
        Akk = chunk_gk_fwd_A(k, k, Gk, layout, 1.0, torch.float32)  # sum_k k_ik k_jk exp(G_ik - G_jk), j <= i
        Tm, w, u = chunk_delta_wy_fwd(k, v, beta, layout, gk=Gk, Akk=Akk)
        h, v_new, ht = chunk_delta_fwd_h(
            k, w, u, layout, gk=Gk, h0=initial_state, output_final_state=output_final_state
        )
        Aqk = chunk_gk_fwd_A(q, k, Gk, layout, scale, v.dtype)
        out = chunk_fwd_o(q, k, v_new, h, layout, scale, gk=Gk, A=Aqk), ht, Tm, Gk
        return (*out, Aqk) if return_scores else out
    G = None if g is None else chunk_local_cumsum(g, layout)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, layout, g=G, p=p, g_erase=erase_gate(G, g, p))
    h, v_new, ht = chunk_delta_fwd_h(k, w, u, layout, g=G, h0=initial_state, output_final_state=output_final_state)
    out = chunk_fwd_o(q, k, v_new, h, layout, scale, g=G), ht, Tm, G
    return (*out, None) if return_scores else out


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
    *,
    gk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
    Aqk: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The Triton backward (contiguous inputs; ``Tm``, ``G`` and, with ``gk``, ``Aqk`` from
    :func:`chunk_delta_rule_fwd`, or ``None`` to redo the WY solve / the gate cumsum / the scores, as the
    recurrent op's backward does).

    Returns:
        ``dq, dk, dv`` (input dtypes), ``dbeta`` ``[B, T, H]`` float32, ``dg`` float32 shaped like the
        gate (``[B, T, H]`` for ``g``, ``[B, T, H, K]`` for ``gk``; ``None`` when ungated) and ``dh0``
        ``[N, H, K, V]`` float32 (``None`` unless ``want_dh0``); with erase keys ``p`` also ``dp``
        (``p.dtype``) last.
    """
    check_erase_gate(gk, p)
    if gk is not None:
        return _chunk_kda_bwd(q, k, v, beta, gk, Tm, scale, initial_state, do, dht, layout, want_dh0, G, Aqk)
    if G is None and g is not None:
        G = chunk_local_cumsum(g, layout)
    Ge = erase_gate(G, g, p)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, layout, g=G, Tm=Tm, p=p, g_erase=Ge)
    h, v_new, _ = chunk_delta_fwd_h(k, w, u, layout, g=G, h0=initial_state)
    dv_local = chunk_bwd_dv(q, k, do, None, layout, scale, g=G)
    dh, dh0, dv_new = chunk_delta_bwd_dh(q, k, w, do, dv_local, layout, scale, g=G, dht=dht, want_dh0=want_dh0)
    dq, dk, dw, dG = chunk_bwd_dqkwg(q, k, v_new, h, do, dh, dv_new, layout, scale, g=G, want_dg=G is not None)
    grads = chunk_delta_wy_bwd(k, v, beta, Tm, dw, dv_new, dk, layout, g=G, dG=dG, p=p, g_erase=Ge)  # dg: finished
    dk, dv, dbeta, dg = grads[:4]
    return (dq, dk, dv, dbeta, dg, dh0) + grads[4:]


def erase_gate(G: torch.Tensor | None, g: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor | None:
    """The gate cumsum Comba's erase rows read the state at, ``G - g`` (before the token's own decay), or
    ``None`` (no erase keys or no gate: the rows use ``G``)."""
    return None if p is None or G is None else G - g.float()


def _chunk_kda_bwd(q, k, v, beta, gk, Tm, scale, initial_state, do, dht, layout, want_dh0, Gk, Aqk):
    """:func:`chunk_delta_rule_bwd` for the per-key-channel gate ``gk``: the vector-gate scores and their
    intra-chunk backward (:mod:`fla.ops.common.chunk_intra_gk`) stand in for the scalar-gate products."""
    if Gk is None:
        Gk = chunk_local_cumsum(gk, layout)
    Akk = None if Tm is not None else chunk_gk_fwd_A(k, k, Gk, layout, 1.0, torch.float32)
    Tm, w, u = chunk_delta_wy_fwd(k, v, beta, layout, gk=Gk, Tm=Tm, Akk=Akk)
    h, v_new, _ = chunk_delta_fwd_h(k, w, u, layout, gk=Gk, h0=initial_state)
    if Aqk is None:
        Aqk = chunk_gk_fwd_A(q, k, Gk, layout, scale, v.dtype)
    dv_local = chunk_bwd_dv(q, k, do, None, layout, scale, gk=Gk, A=Aqk)
    dh, dh0, dv_new = chunk_delta_bwd_dh(q, k, w, do, dv_local, layout, scale, gk=Gk, dht=dht, want_dh0=want_dh0)
    dq_intra, dk_intra = chunk_gk_bwd_intra(q, k, Gk, chunk_gk_bwd_dA(v_new, do, layout, scale), layout)
    dq, dk, dw, dg = chunk_bwd_dqkwg(
        q, k, v_new, h, do, dh, dv_new, layout, scale, want_dg=True, gk=Gk, dq_intra=dq_intra, dk_intra=dk_intra
    )  # dg: the output / state stages' part, finished (reverse-cumsummed)
    dk, dv, dbeta, dg = chunk_delta_wy_bwd(k, v, beta, Tm, dw, dv_new, dk, layout, gk=Gk, dgk=dg)
    return dq, dk, dv, dbeta, dg, dh0


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Triton chunked (gated) delta rule; gradients to q, k, v, beta, g (or gk) and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, gk=None):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, Tm, G, Aqk = chunk_delta_rule_fwd(
            q, k, v, beta, g, scale, initial_state, output_final_state, layout, gk=gk, return_scores=True
        )
        ctx.save_for_backward(q, k, v, beta, g, Tm, G, initial_state, gk, Aqk)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, beta, g, Tm, G, initial_state, gk, Aqk = ctx.saved_tensors
        return chunk_delta_grads(ctx, q, k, v, beta, g, Tm, G, initial_state, do, dht, ctx.layout, gk=gk, Aqk=Aqk)


def chunk_delta_grads(
    ctx, q, k, v, beta, g, Tm, G, initial_state, do, dht, layout: ChunkLayout, gk=None, Aqk=None
) -> tuple:
    """The gradients an autograd Function with inputs ``(q, k, v, beta, g, scale, initial_state,
    output_final_state, cu_seqlens, gk)`` returns, by :func:`chunk_delta_rule_bwd` (``Tm``, ``G``, ``Aqk``: the
    forward's, or ``None`` to recompute them), each in its input's dtype."""
    want_dh0 = initial_state is not None and ctx.needs_input_grad[6]
    dq, dk, dv, dbeta, dg, dh0 = chunk_delta_rule_bwd(
        q, k, v, beta, g, Tm, ctx.scale, initial_state, do, dht, layout, want_dh0, G=G, gk=gk, Aqk=Aqk
    )
    dg, dgk = (None, cast_like(dg, gk)) if gk is not None else (cast_like(dg, g), None)
    return dq, dk, dv, cast_like(dbeta, beta), dg, None, cast_like(dh0, initial_state), None, None, dgk


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
    gk: torch.Tensor | None = None,
    gk_name: str = "gk",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of the public ``chunk_(gated_)delta_rule`` / ``chunk_kda`` ops (``g`` ``[B, T, H]``, ``gk``
    ``[B, T, H, K]`` (public name ``gk_name``) or neither): check the inputs, then the Triton pipeline or
    :func:`fla.ops.common.chunk_torch.chunk_delta_torch_op`."""
    beta, scale = prepare_delta_call(q, k, v, beta, g, scale, initial_state, cu_seqlens, gk=gk, gk_name=gk_name)
    args = (q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch(
        (q, k, v, beta, g, gk, initial_state), chunk_delta_torch_op, _chunk_delta_triton, *args,
        use_qk_l2norm_in_kernel, allow_neg_eigval, gk,
    )  # fmt: skip


def _chunk_delta_triton(
    q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, allow_neg_eigval,
    gk=None,
):  # fmt: skip
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval, norm=l2norm_triton)
    q, k = expand_groups(q, k, v)
    return ChunkDeltaRuleFunction.apply(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, gk)
