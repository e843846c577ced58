"""Gated linear attention with a value-side (column) gate, assembled from the shared chunk stages.

Per head, with ``S`` ``[K, V]`` and ``gv_t`` ``[V]`` log decays of the state's columns::

    S_t = S_{t-1} diag(exp(gv_t)) + k_t^T v_t,      o_t = scale * q_t S_t

(GSA's first pass, keys -> slot scores; :mod:`fla.ops.gsa`). Chunked, with ``G`` the chunk-local cumsum
of ``gv``, ``h`` the state before the chunk, ``L`` its last row and ``A = scale * causal(q k^T)``::

    o_i = scale * (q_i h) * exp(G_i) + sum_{j <= i} A_ij v_j * exp(G_i - G_j)
    h'  = h * exp(G_L) + k^T (v * exp(G_L - G))

The intra-chunk sum has the form of the vector-gate intra backward (``dq_i = sum_j dA_ij k_j exp(G_i -
G_j)``, :func:`fla.ops.common.chunk_intra_gk.chunk_gk_bwd_intra`) with ``A`` for ``dA`` and ``v`` for
``k``; the state recurrence and the inter-chunk output are the ``gv`` branches of :mod:`.chunk_h` and
:mod:`.chunk_o`. Backward, with ``dh`` the state gradients (the ``gv`` reverse recurrence)::

    dv_j = sum_{i >= j} A_ij do_i exp(G_i - G_j)  +  (k_j dh) * exp(G_L - G_j)        (intra: the same
           vector-gate stage with ``do`` for ``q``, its ``dk`` output; inter: :func:`chunk_gv_bwd_dvg`)
    dA_ij = sum_v do_iv v_jv exp(G_iv - G_jv)       (the vector-gate scores stage with do, v)
    dq = scale * ((do * exp(G)) h^T + dA k),   dk = (v * exp(G_L - G)) dh^T + scale * dA^T q
    dL/dG_i = o_i * do_i - v_i * dv_i  (+ at i = L: exp(G_L) sum_k h * dh + sum_j v_j * dv_inter_j)

and ``dgv`` is the chunk-local reverse cumsum of ``dL/dG`` (the cumsum reversal of :mod:`.chunk_bwd`,
over the value dim), finished per chunk in :func:`chunk_gv_bwd_dvg`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk_bwd import chunk_bwd_dqkg
from fla.ops.common.chunk_h import chunk_bwd_dh, chunk_fwd_h
from fla.ops.common.chunk_intra_gk import chunk_gk_bwd_dA, chunk_gk_bwd_intra, chunk_gk_fwd_A
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.chunk_torch import chunk_value_gated_torch_op
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.inputs import prepare_gated_call
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import CHUNK_SIZE, autotune_configs, block_size, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv
from fla.utils.tensors import contiguous


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(), key=["H", "K", "V", "BK", "BV", "DOT_PRECISION"])
@triton.jit(do_not_specialize=["T"])
def chunk_gv_dvg_bwd_kernel(
    k,
    v,
    h,
    o,
    do,
    dh,
    gv,
    dv_intra,
    dv,
    dg,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # one program per (V block, chunk, batch * head): dv and the finished dgv of a [BT, BV] tile
    i_v, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_t = i_tc * BT + tl.arange(0, BT)  # [BT]
    m_t = o_t < T_n
    i_last = tl.minimum(i_tc * BT + BT, T_n) - 1
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_v = o_v < V
    m_tv = m_t[:, None] & m_v[None, :]
    o_tv = ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :]  # [BT, BV]

    b_dv = tl.zeros([BT, BV], dtype=tl.float32)  # k dh
    b_hdh = tl.zeros([BV], dtype=tl.float32)  # sum_k h * dh
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)  # [BK]
        m_k = o_k < K
        o_tk = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
        b_k = tl.load(k + o_tk, mask=m_t[:, None] & m_k[None, :], other=0.0)
        p_state = (i_ch * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]  # [BK, BV]
        m_kv = m_k[:, None] & m_v[None, :]
        b_h = tl.load(h + p_state, mask=m_kv, other=0.0)
        b_dh = tl.load(dh + p_state, mask=m_kv, other=0.0)
        b_dv += tl.dot(b_k, b_dh.to(b_k.dtype), input_precision=DOT_PRECISION)
        b_hdh += tl.sum(b_h.to(tl.float32) * b_dh.to(tl.float32), axis=0)

    b_g = tl.load(gv + o_tv, mask=m_tv, other=0.0)  # [BT, BV]
    b_gl = tl.load(gv + ((bos + i_last) * H + i_h) * V + o_v, mask=m_v, other=0.0)  # [BV]
    b_dv *= tl.exp(tl.where(m_tv, b_gl[None, :] - b_g, 0.0))  # the inter-chunk part
    b_v = tl.load(v + o_tv, mask=m_tv, other=0.0).to(tl.float32)
    b_o = tl.load(o + o_tv, mask=m_tv, other=0.0).to(tl.float32)
    b_do = tl.load(do + o_tv, mask=m_tv, other=0.0).to(tl.float32)
    b_dvt = b_dv + tl.load(dv_intra + o_tv, mask=m_tv, other=0.0)
    b_dg = b_o * b_do - b_v * b_dvt
    b_dgl = b_hdh * tl.exp(b_gl) + tl.sum(b_v * b_dv, axis=0)  # [BV]: the carried state's decay
    b_dg += tl.where((o_t == i_last)[:, None], b_dgl[None, :], 0.0)
    b_dg = tl.cumsum(b_dg, axis=0, reverse=True)  # dL/dG -> dL/dgv inside the chunk
    tl.store(dv + o_tv, b_dvt.to(dv.dtype.element_ty), mask=m_tv)
    tl.store(dg + o_tv, b_dg.to(dg.dtype.element_ty), mask=m_tv)


def chunk_gv_bwd_dvg(
    k: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    o: torch.Tensor,
    do: torch.Tensor,
    dh: torch.Tensor,
    gv: torch.Tensor,
    dv_intra: torch.Tensor,
    layout: ChunkLayout,
    dg_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dv`` (``v.dtype``) and the finished ``dgv`` (``dg_dtype``), both ``[B, T, H, V]``.

    Args:
        k: ``[B, T, H, K]``; v, o, do: ``[B, T, H, V]`` (``o`` the forward output); h, dh: states and state
        gradients ``[B, NT, H, K, V]``; gv: the chunk-local cumsum ``G``; dv_intra: ``[B, T, H, V]`` float32.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    BK, BV = block_size(K), block_size(V)
    dv = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    dg = empty(B, T, H, V, dtype=dg_dtype, device=v.device)
    grid = (cdiv(V, BV), layout.row_chunks, B * H)
    chunk_gv_dvg_bwd_kernel[grid](
        k, v, h, o, do, dh, gv, dv_intra, dv, dg, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return dv, dg


def chunk_gv_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gv: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    layout: ChunkLayout,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward: ``o [B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 (or ``None``).

    Args:
        q, k: ``[B, T, H, K]``; v, gv: ``[B, T, H, V]`` (``gv`` raw log gates); initial_state ``[N, H, K, V]``.
    """
    G = chunk_local_cumsum(gv, layout)
    h, ht = chunk_fwd_h(k, v, layout, gv=G, h0=initial_state, output_final_state=output_final_state)
    A = chunk_gk_bwd_dA(k, q, layout, scale)  # scale * causal(q k^T), float32
    # sum_j A_ij v_j exp(G_i - G_j): the vector-gate stage's dq output (its dk output is not needed here)
    o_intra, _ = chunk_gk_bwd_intra(v, v, G, A, layout)
    o = chunk_fwd_o(q, k, v, h, layout, scale, gv=G, o_intra=o_intra)
    return o, ht


def chunk_gv_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gv: torch.Tensor,
    o: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    layout: ChunkLayout,
    want_dh0: bool,
) -> tuple[torch.Tensor, ...]:
    """Backward (``o``: the forward output): ``dq, dk, dv`` (input dtypes), ``dgv`` (``gv.dtype``) and
    ``dh0 [N, H, K, V]`` float32 (``None`` unless ``want_dh0``)."""
    do = do.to(v.dtype)  # the stages multiply do with v-dtype tiles
    G = chunk_local_cumsum(gv, layout)
    h, _ = chunk_fwd_h(k, v, layout, gv=G, h0=initial_state)
    dh, dh0 = chunk_bwd_dh(q, do, layout, gv=G, dht=dht, scale=scale, want_dh0=want_dh0)
    A = chunk_gk_bwd_dA(k, q, layout, scale)
    _, dv_intra = chunk_gk_bwd_intra(do, v, G, A, layout)  # sum_{i >= j} A_ij do_i exp(G_i - G_j)
    dA = chunk_gk_fwd_A(do, v, G, layout, 1.0, torch.float32)
    dq, dk, _ = chunk_bwd_dqkg(q, k, v, h, do, dh, layout, scale, gv=G, dA=dA)
    dv, dg = chunk_gv_bwd_dvg(k, v, h, o, do, dh, G, dv_intra, layout, gv.dtype)
    return dq, dk, dv, dg, dh0


class ChunkValueGatedFunction(torch.autograd.Function):
    """The Triton chunk pipeline with a value-side gate ``gv``; gradients to q, k, v, gv and the initial state."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, gv, scale, initial_state, output_final_state, cu_seqlens):
        layout = ChunkLayout.build(q, cu_seqlens, CHUNK_SIZE)
        o, ht = chunk_gv_fwd(q, k, v, gv, scale, initial_state, output_final_state, layout)
        ctx.save_for_backward(q, k, v, gv, o, initial_state)
        ctx.scale, ctx.layout = scale, layout
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, gv, o, initial_state = ctx.saved_tensors
        want_dh0 = initial_state is not None and ctx.needs_input_grad[5]
        dq, dk, dv, dg, dh0 = chunk_gv_bwd(q, k, v, gv, o, ctx.scale, initial_state, do, dht, ctx.layout, want_dh0)
        dh0 = None if dh0 is None else dh0.to(initial_state.dtype)
        return dq, dk, dv, dg, None, dh0, None, None


def chunk_value_gated(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gv: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    gv_name: str = "gv",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the inputs, then run :class:`ChunkValueGatedFunction` (Triton) or
    :func:`fla.ops.common.chunk_torch.chunk_value_gated_torch_op` (PyTorch), as the dispatch rule says.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; gv: ``[B, T, H, V]`` log decays of the state columns
            (``gv_name``: its public name, for errors); initial_state: ``[N, H, K, V]``; cu_seqlens ``[N+1]``.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    if gv is None:
        raise ValueError(f"{gv_name} is required (the value-side log gates [B, T, H, V])")
    try:
        scale = prepare_gated_call(q, k, v, scale, initial_state, cu_seqlens, gv=gv)
    except ValueError as e:
        raise ValueError(str(e).replace("gv ", f"{gv_name} ", 1) if gv_name != "gv" else str(e)) from None
    args = (q, k, v, gv, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch((q, k, v, gv, initial_state), chunk_value_gated_torch_op, ChunkValueGatedFunction.apply, *args)
