"""Inter-chunk state recurrence (forward states ``h`` and backward state gradients ``dh``).

One kernel walks the chunks of a sequence in order, holding a ``[BK, BV]`` fp32 block of the
state. Before each chunk it stores the running state; then, with ``G`` the chunk-local cumsum of
the gates and ``L`` the chunk's last row::

    forward  (x = k, y = v, in order):     S <- exp(G_L) * S + (x * exp(G_L - G))^T y
    backward (x = q, y = do, reversed):    S <- exp(G_L) * S + (scale * x * exp(G))^T y

so ``h[c]`` is the state before chunk ``c`` and ``dh[c]`` the gradient of the state *after* chunk
``c`` (what chunk ``c``'s keys and values feed). The last running value is the final state
``h_T`` (forward) or ``dh_0`` (backward). Gates: scalar ``g [B, T, H]`` (a chunk-local cumsum) or a
constant ``g_gamma [H]`` alone (summed in the kernel), or vector ``gk [B, T, H, K]`` (row-wise decay, a
chunk-local cumsum); or none. A value-side gate ``gv [B, T, H, V]`` (column-wise decay, a chunk-local
cumsum) decays the columns the same way: ``y`` takes the ``exp(G_L - G)`` (``exp(G)`` reversed) factor.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.cumsum import SCALAR_GATE_FLAGS, chunk_scalar_gates
from fla.ops.common.indexing import sequence_bounds, state_block
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, block_size, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv


@lean_launch
@given_heuristics(
    **SCALAR_GATE_FLAGS, USE_GK="gk", USE_GQ="gq", USE_GV="gv", USE_S0="s0", STORE_SN="sn", IS_VARLEN="cu_seqlens"
)
@triton.autotune(
    configs=autotune_configs(),
    key=["H", "HX", "K", "V", "BK", "BV", "REVERSE", "USE_G", "USE_GK", "USE_GQ", "USE_GV", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def chunk_state_kernel(
    x,
    y,
    g,
    g_gamma,
    gk,
    gq,
    gv,
    s0,
    states,
    sn,
    cu_seqlens,
    chunk_offsets,
    scale,
    T,
    H: tl.constexpr,
    HX: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    REVERSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    HAS_G: tl.constexpr,
    USE_GK: tl.constexpr,
    USE_GQ: tl.constexpr,
    USE_GV: tl.constexpr,
    USE_S0: tl.constexpr,
    STORE_SN: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_k, i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)

    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(i_k, i_v, K, V, BK, BV)

    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_S0:
        b_s += tl.load(s0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i in range(0, NT):
        if REVERSE:
            i_t = NT - 1 - i
        else:
            i_t = i
        tl.store(states + ((boh + i_t) * H + i_h) * K * V + o_kv, b_s.to(states.dtype.element_ty), mask=m_kv)

        o_t = i_t * BT + tl.arange(0, BT)  # [BT]
        m_t = o_t < T_n
        i_last = tl.minimum(i_t * BT + BT, T_n) - 1
        m_kt = m_k[:, None] & m_t[None, :]
        o_xt = ((bos + o_t[None, :]) * H + i_h) * K + o_k[:, None]  # [BK, BT]: x (and gk) transposed
        if HX != H:  # grouped x: head i_h reads its group's row
            o_xt = ((bos + o_t[None, :]) * HX + i_h // (H // HX)) * K + o_k[:, None]
        b_x = tl.load(x + o_xt, mask=m_kt, other=0.0).to(tl.float32) * scale
        b_y = tl.load(
            y + ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
        )
        if USE_G:
            b_g, b_gl = chunk_scalar_gates(g, g_gamma, bos, o_t, m_t, i_last, i_h, H, HAS_G)
            if REVERSE:
                b_x *= tl.exp(b_g)[None, :]
            else:
                b_x *= tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[None, :]
            b_s *= tl.exp(b_gl)
        if USE_GK:
            b_gk = tl.load(gk + o_xt, mask=m_kt, other=0.0)  # [BK, BT]
            b_gkl = tl.load(gk + ((bos + i_last) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
            if REVERSE and USE_GQ:  # the queries' own gate (RWKV6: the exclusive cumsum)
                b_x *= tl.exp(tl.load(gq + o_xt, mask=m_kt, other=0.0))
            elif REVERSE:
                b_x *= tl.exp(b_gk)
            else:
                b_x *= tl.exp(tl.where(m_kt, b_gkl[:, None] - b_gk, 0.0))
            b_s *= tl.exp(b_gkl)[:, None]
        if USE_GV:  # column-wise decay: the same with the roles of rows and columns swapped
            m_tv = m_t[:, None] & m_v[None, :]
            b_gv = tl.load(gv + ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :], mask=m_tv, other=0.0)
            b_gvl = tl.load(gv + ((bos + i_last) * H + i_h) * V + o_v, mask=m_v, other=0.0)  # [BV]
            if REVERSE:
                b_y = (b_y * tl.exp(b_gv)).to(b_y.dtype)
            else:
                b_y = (b_y * tl.exp(tl.where(m_tv, b_gvl[None, :] - b_gv, 0.0))).to(b_y.dtype)
            b_s *= tl.exp(b_gvl)[None, :]
        b_s += tl.dot(b_x.to(b_y.dtype), b_y, input_precision=DOT_PRECISION)

    if STORE_SN:
        tl.store(sn + i_nh * K * V + o_kv, b_s, mask=m_kv)


def _run_state_kernel(x, y, g, g_gamma, gk, s0, want_sn, scale, reverse, layout, states_dtype, gq=None, gv=None):
    B, T, HX, K = x.shape
    H, V = y.shape[2], y.shape[-1]
    check_grouped_heads("k" if not reverse else "q", HX, H, gk, gv)
    BK, BV = block_size(K), block_size(V)
    states = empty(*layout.states_shape(H, K, V), dtype=states_dtype or x.dtype, device=x.device)
    sn = empty(layout.num_seqs, H, K, V, dtype=torch.float32, device=x.device) if want_sn else None
    grid = (cdiv(K, BK), cdiv(V, BV), layout.num_seqs * H)
    chunk_state_kernel[grid](
        x, y, g, g_gamma, gk, gq, gv, s0, states, sn, layout.cu_seqlens, layout.chunk_offsets, scale, T,
        H=H, HX=HX, K=K, V=V, BT=layout.chunk_size, BK=BK, BV=BV, REVERSE=reverse,
        DOT_PRECISION=dot_precision(x.dtype),
    )  # fmt: skip
    return states, sn


def chunk_fwd_h(
    k: torch.Tensor,
    v: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    output_final_state: bool = False,
    states_dtype: torch.dtype | None = None,
    g_gamma: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """States at chunk starts.

    Args:
        k: ``[B, T, H, K]`` (or ``[B, T, HK, K]`` with ``HK`` dividing ``H``: groups of ``H // HK`` heads share a
            key, scalar gates only); v: ``[B, T, H, V]``; layout: the chunking (:class:`ChunkLayout`).
        g ``[B, T, H]`` / gk ``[B, T, H, K]``: chunk-local cumsums of the log gates (float32) or
            ``None``; h0: ``[N, H, K, V]``; states_dtype: dtype of ``h`` (default ``k.dtype``).
        g_gamma ``[H]``: a constant log decay, summed in the kernel; only without ``g`` (fold it into
            ``G`` with :func:`fla.ops.common.cumsum.chunk_local_cumsum` otherwise).
        gv ``[B, T, H, V]``: chunk-local cumsum of value-side (column) log gates, float32, or ``None``:
            ``S <- S exp(G_L) + k^T (v * exp(G_L - G))`` column-wise (GSA's first pass).
    Returns:
        ``h`` ``[B, NT, H, K, V]`` (``[1, total chunks, H, K, V]`` for varlen) and the final state
        ``[N, H, K, V]`` float32 (``None`` unless ``output_final_state``).
    """
    check_scalar_gates(g, g_gamma)
    return _run_state_kernel(k, v, g, g_gamma, gk, h0, output_final_state, 1.0, False, layout, states_dtype, gv=gv)


def chunk_bwd_dh(
    q: torch.Tensor,
    do: torch.Tensor,
    layout: ChunkLayout,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    dht: torch.Tensor | None = None,
    scale: float = 1.0,
    want_dh0: bool = False,
    states_dtype: torch.dtype | None = None,
    g_gamma: torch.Tensor | None = None,
    gq: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of the states after each chunk (the reverse recurrence).

    Args:
        q: ``[B, T, H, K]``; do: ``[B, T, H, V]``; g / gk / g_gamma / gv / layout: as in
        :func:`chunk_fwd_h`; dht: ``[N, H, K, V]`` gradient of the final state (or ``None``).
        gq: ``[B, T, H, K]`` the queries' own gate cumsum (with ``gk``): ``q`` is scaled by ``exp(gq)``
            while the carried state decays by ``exp(gk_L)`` (RWKV6: ``gq`` is the exclusive cumsum).
    Returns:
        ``dh`` shaped like ``h`` (``dh[c]`` = gradient of the state after chunk ``c``) and
        ``dh0`` ``[N, H, K, V]`` float32 when ``want_dh0``.
    """
    check_scalar_gates(g, g_gamma)
    if gq is not None and gk is None:
        raise ValueError("gq (the queries' gate) needs the vector gate gk")
    return _run_state_kernel(q, do, g, g_gamma, gk, dht, want_dh0, scale, True, layout, states_dtype, gq, gv)


def check_grouped_heads(name: str, HX: int, H: int, gk: torch.Tensor | None, gv: torch.Tensor | None) -> None:
    """Grouped query / key heads (``HX`` of them for ``H`` value heads, Mamba2's shared ``B`` / ``C``): ``HX``
    divides ``H``, and only with scalar gates (the vector gates' tiles are per value head)."""
    if HX != H and (H % HX != 0 or gk is not None or gv is not None):
        raise ValueError(
            f"{name} has {HX} heads for {H} value heads: grouped heads need {HX} to divide {H} and scalar gates"
        )


def check_scalar_gates(g: torch.Tensor | None, g_gamma: torch.Tensor | None) -> None:
    """The stages take ``G`` or a constant decay alone, not both."""
    if g is not None and g_gamma is not None:
        raise ValueError(
            "g and g_gamma given together: fold g_gamma into G (chunk_local_cumsum(g, layout, g_gamma=g_gamma))"
        )
