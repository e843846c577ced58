"""The chunk pipeline for gated linear attention, assembled from the shared stages.

Forward:  G = chunk-local cumsum(g)  ->  h = state recurrence  ->  [A = vector-gate scores]  ->  o
Backward: G, h recomputed  ->  dh (reverse recurrence)  ->  dv  ->  [dA, intra dq/dk]  ->
          dq, dk, dL/dG  ->  dg = chunk-local reverse cumsum(dL/dG)

Scalar gates ``g [B, T, H]`` (with an optional constant ``g_gamma [H]``), vector gates
``gk [B, T, H, K]``, or no gate at all. ``g_gamma`` is a constant: it gets no gradient.
Per-token scalar gates ``g`` are summed once by a cumsum launch and read as ``G`` by every stage
(measured on H100 at T=8192: 3.5% faster fwd+bwd than summing them again inside each consumer kernel,
whose scan sits in the sequential state loop; no difference at T=2048). A constant decay alone
(``g_gamma``, RetNet) is summed inside the kernels that use it
(:func:`fla.ops.common.cumsum.chunk_scalar_gates`): no cumsum launch, no ``G`` tensor.

:class:`ChunkGatedFunction` is the one autograd Function of the GLA family and :func:`chunk_gated` the body
of every public ``chunk_<op>`` of it (checks, then the Triton pipeline or the PyTorch chunked form).
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk_bwd import chunk_bwd_dqkg, chunk_bwd_dv
from fla.ops.common.chunk_h import chunk_bwd_dh, chunk_fwd_h
from fla.ops.common.chunk_intra_gk import chunk_gk_bwd_dA, chunk_gk_bwd_intra, chunk_gk_fwd_A
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.chunk_torch import chunk_gated_torch_op
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import CHUNK_SIZE
from fla.utils.backend import dispatch
from fla.utils.tensors import contiguous


def _vector_gate_cumsum(gk, layout):
    return None if gk is None else chunk_local_cumsum(gk, layout)


def _scalar_gates(g: torch.Tensor | None, g_gamma: torch.Tensor | None, layout: ChunkLayout) -> dict:
    """The stages' scalar-gate arguments: ``G`` (with ``g_gamma`` folded in) when per-token gates are
    given, else the constant decay for the kernels to sum themselves."""
    if g is None:
        return {"g": None, "g_gamma": g_gamma}
    return {"g": chunk_local_cumsum(g, layout, g_gamma=g_gamma), "g_gamma": None}


def chunk_gated_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    g_gamma: torch.Tensor | None,
    gk: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    layout: ChunkLayout,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Forward of the pipeline.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` / g_gamma: ``[H]`` scalar log
            gates, or gk: ``[B, T, H, K]`` vector log gates; initial_state: ``[N, H, K, V]``.
    Returns:
        ``o [B, T, H, V]``, the final state ``[N, H, K, V]`` float32 (or ``None``) and, for vector
        gates, the intra-chunk scores ``A [B, T, H, BT]`` in ``v.dtype`` (kept for the backward).
    """
    Gk = _vector_gate_cumsum(gk, layout)
    gates = _scalar_gates(g, g_gamma, layout)
    h, ht = chunk_fwd_h(k, v, layout, gk=Gk, h0=initial_state, output_final_state=output_final_state, **gates)
    A = None if Gk is None else chunk_gk_fwd_A(q, k, Gk, layout, scale, v.dtype)
    o = chunk_fwd_o(q, k, v, h, layout, scale, gk=Gk, A=A, **gates)
    return o, ht, A


def chunk_gated_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    g_gamma: torch.Tensor | None,
    gk: torch.Tensor | None,
    A: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    layout: ChunkLayout,
    want_dg: bool,
    want_dh0: bool,
):
    """Backward of the pipeline (``A``: the forward's vector-gate scores, recomputed when ``None``).

    Returns:
        ``dq, dk, dv`` (input dtypes), ``dg`` (shaped like the gate that was given: ``gk``'s dtype
        for vector gates, float32 for scalar ones; ``None`` unless ``want_dg``) and ``dh0``
        ``[N, H, K, V]`` float32 (``None`` unless ``want_dh0``).
    """
    Gk = _vector_gate_cumsum(gk, layout)
    if Gk is not None and A is None:
        A = chunk_gk_fwd_A(q, k, Gk, layout, scale, v.dtype)
    gates = _scalar_gates(g, g_gamma, layout)
    h, _ = chunk_fwd_h(k, v, layout, gk=Gk, h0=initial_state, **gates)
    dh, dh0 = chunk_bwd_dh(q, do, layout, gk=Gk, dht=dht, scale=scale, want_dh0=want_dh0, **gates)
    dv = chunk_bwd_dv(q, k, do, dh, layout, scale, gk=Gk, A=A, **gates)
    dq_intra = dk_intra = None
    if Gk is not None:
        dA = chunk_gk_bwd_dA(v, do, layout, scale)
        dq_intra, dk_intra = chunk_gk_bwd_intra(q, k, Gk, dA, layout)
    dq, dk, dg = chunk_bwd_dqkg(
        q, k, v, h, do, dh, layout, scale, gk=Gk, dq_intra=dq_intra, dk_intra=dk_intra, want_dg=want_dg,
        dg_dtype=gk.dtype if gk is not None else torch.float32, **gates,
    )  # fmt: skip
    if dg is not None and gk is None:  # scalar gates: dL/dG -> dL/dg
        dg = chunk_local_cumsum(dg, layout, reverse=True)
    return dq, dk, dv, dg, dh0


def cast_like(x: torch.Tensor | None, ref: torch.Tensor | None) -> torch.Tensor | None:
    """``x`` in ``ref``'s dtype (``None`` stays ``None``): a gradient back in its input's dtype."""
    return None if x is None else x.to(ref.dtype)


def chunk_layout(q: torch.Tensor, cu_seqlens: torch.Tensor | None) -> ChunkLayout:
    """The pipeline's chunking of ``q [B, T, ...]``."""
    return ChunkLayout.build(q, cu_seqlens, CHUNK_SIZE)


class ChunkGatedFunction(torch.autograd.Function):
    """The Triton chunk pipeline of the GLA family: scalar gates ``g`` (with an optional constant ``g_gamma``),
    vector gates ``gk``, or none; gradients to q, k, v, the gate that was given and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, g_gamma, gk, scale, initial_state, output_final_state, cu_seqlens):
        layout = chunk_layout(q, cu_seqlens)
        o, ht, A = chunk_gated_fwd(q, k, v, g, g_gamma, gk, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(q, k, v, g, g_gamma, gk, A, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, g, g_gamma, gk, A, initial_state = ctx.saved_tensors
        wants = ctx.needs_input_grad
        dq, dk, dv, dg, dgk, dh0 = chunk_gated_grads(
            q, k, v, g, g_gamma, gk, A, ctx.scale, initial_state, do, dht, ctx.layout, wants[3] or wants[5], wants[7]
        )
        return dq, dk, dv, dg, None, dgk, None, dh0, None, None


def chunk_gated_grads(
    q, k, v, g, g_gamma, gk, A, scale, initial_state, do, dht, layout: ChunkLayout, want_dg: bool, want_dh0: bool
) -> tuple[torch.Tensor | None, ...]:
    """:func:`chunk_gated_bwd` for an autograd Function: ``dq, dk, dv``, the gradient of ``g`` or of ``gk``
    (whichever was given, when ``want_dg``) and of ``initial_state`` (when given and ``want_dh0``), each in
    its input's dtype."""
    if g is not None and gk is not None:
        raise NotImplementedError("the chunk backward takes scalar or vector gates, not both")
    want_dg = want_dg and (g is not None or gk is not None)
    want_dh0 = want_dh0 and initial_state is not None
    dq, dk, dv, dg, dh0 = chunk_gated_bwd(
        q, k, v, g, g_gamma, gk, A, scale, initial_state, do, dht, layout, want_dg, want_dh0
    )
    dg, dgk = (None, cast_like(dg, gk)) if gk is not None else (cast_like(dg, g), None)
    return dq, dk, dv, dg, dgk, cast_like(dh0, initial_state)


def chunk_gated(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gk_name: str = "gk",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of a public GLA-family ``chunk_<op>``: check the inputs, then run :class:`ChunkGatedFunction`
    (Triton) or :func:`fla.ops.common.chunk_torch.chunk_gated_torch_op` (PyTorch), as the dispatch rule says.

    Args:
        g: ``[B, T, H]`` and / or g_gamma: ``[H]`` scalar log gates, or gk: ``[B, T, H, K]`` a vector log
            gate (``gk_name``: its public name, for errors), or none of them.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    scale = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, gk_name=gk_name, g=g, g_gamma=g_gamma, gk=gk)
    if g is not None and gk is not None:
        raise ValueError(f"a chunk op takes scalar gates (g, g_gamma) or a vector gate ({gk_name}), not both")
    args = (q, k, v, g, g_gamma, gk, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch((q, k, v, g, g_gamma, gk, initial_state), chunk_gated_torch_op, ChunkGatedFunction.apply, *args)
