"""Chunk-local cumulative sums of log gates (stage 1 of the chunk pipeline, and its backward).

Forward: ``G_i = sum_{j <= i} g_j`` inside each chunk (``+ (i + 1) * g_gamma`` for a constant
per-head decay), float32. Backward: the gradient of a chunk-local cumsum is the chunk-local
*reverse* cumsum ``dg_i = sum_{j >= i} dG_j`` (``reverse=True``).
Scalar gates are ``[B, T, H]``, vector gates ``[B, T, H, D]``.

Scalar gates are cheap to sum where they are used: :func:`chunk_scalar_gates` is the same
forward cumsum inside a consumer kernel (a ``[BT]`` scan), which saves the GLA-family pipeline
this stage's launches and its ``G`` tensor.

:func:`global_cumsum` sums over whole sequences instead (softmax attention with a forget gate needs
``G_i - G_j`` for any two tokens of a sequence), one program per sequence and head.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import block_size, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv


@lean_launch
@given_heuristics(USE_G="g", USE_GAMMA="g_gamma", STORE_EXCLUSIVE="out_x", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def chunk_local_cumsum_kernel(
    g,
    g_gamma,
    out,
    out_x,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    D: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    SCALAR: tl.constexpr,
    REVERSE: tl.constexpr,
    USE_G: tl.constexpr,
    USE_GAMMA: tl.constexpr,
    STORE_EXCLUSIVE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    # out_x (vector gates): the exclusive cumsum G_i - g_i as well, from the same load
    i_d, i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_t = i_tc * BT + tl.arange(0, BT)  # [BT] positions inside the sequence
    m_t = o_t < T_n
    if SCALAR:
        o_g = (bos + o_t) * H + i_h  # [BT]
        m_g = m_t
        b_g = tl.zeros([BT], dtype=tl.float32)
        if USE_G:
            b_g += tl.load(g + o_g, mask=m_g, other=0.0).to(tl.float32)
        if USE_GAMMA:
            b_g += tl.load(g_gamma + i_h).to(tl.float32)
    else:
        o_d = i_d * BD + tl.arange(0, BD)  # [BD]
        o_g = ((bos + o_t[:, None]) * H + i_h) * D + o_d[None, :]  # [BT, BD]
        m_g = m_t[:, None] & (o_d < D)[None, :]
        b_g = tl.load(g + o_g, mask=m_g, other=0.0).to(tl.float32)
    b_o = tl.cumsum(b_g, axis=0, reverse=REVERSE)
    tl.store(out + o_g, b_o, mask=m_g)
    if STORE_EXCLUSIVE:
        tl.store(out_x + o_g, b_o - b_g, mask=m_g)


# ``given_heuristics`` flags of every kernel that reads scalar gates through :func:`chunk_scalar_gates`
# (its ``g`` / ``g_gamma`` arguments): any scalar gate, and whether it is the chunk-local cumsum ``G``.
SCALAR_GATE_FLAGS = {"USE_G": ("g", "g_gamma"), "HAS_G": "g"}


@triton.jit
def chunk_scalar_gates(g, g_gamma, bos, o_t, m_t, i_last, i_h, H: tl.constexpr, HAS_G: tl.constexpr):
    """``(G [BT], G_L)`` float32 for a chunk's rows ``o_t`` (valid where ``m_t``; ``i_last`` = its last
    valid row): the chunk-local cumsum of the scalar log gates and its value at the last row.

    ``HAS_G``: ``g`` holds ``G`` (float32, :func:`chunk_local_cumsum`), read as is; rows past the end
    read 0. Else the gate is the constant ``g_gamma [H]`` alone (RetNet), summed here: no ``G`` tensor;
    rows past the end get ``G_L``. Callers mask the rows past the end.
    """
    if HAS_G:
        b_G = tl.load(g + (bos + o_t) * H + i_h, mask=m_t, other=0.0)
        b_Gl = tl.load(g + (bos + i_last) * H + i_h)
    else:
        b_g = tl.zeros(o_t.shape, dtype=tl.float32) + tl.load(g_gamma + i_h).to(tl.float32)
        b_G = tl.cumsum(tl.where(m_t, b_g, 0.0), axis=0)
        b_Gl = tl.sum(tl.where(o_t == i_last, b_G, 0.0), axis=0)  # exactly G at the last row
    return b_G, b_Gl


def chunk_local_cumsum(
    g: torch.Tensor | None,
    layout: ChunkLayout,
    *,
    g_gamma: torch.Tensor | None = None,
    reverse: bool = False,
    exclusive: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunk-local (reverse) cumsum of log gates, float32.

    Args:
        g: ``[B, T, H]`` scalar or ``[B, T, H, D]`` vector gates (or ``None`` with ``g_gamma``).
        layout: the chunking (:class:`ChunkLayout`).
        g_gamma: ``[H]`` constant log decay added to every token (scalar gates only).
        reverse: sum from the end of each chunk (the backward of the forward cumsum).
        exclusive: also return the exclusive cumsum ``G - g`` (vector gates only; RWKV6's queries' gate).
    Returns:
        ``G`` float32 with ``g``'s shape (``[B, T, H]`` for ``g_gamma`` alone); with ``exclusive``
        the pair ``(G, G - g)``.
    """
    B, T = layout.batch, layout.seq_len
    H = g_gamma.shape[0] if g is None else g.shape[2]
    scalar = g is None or g.dim() == 3
    if g_gamma is not None and not scalar:
        raise ValueError("g_gamma applies to scalar gates [B, T, H] only")
    D = 1 if scalar else g.shape[-1]
    BD = 1 if scalar else block_size(D)
    device = (g if g is not None else g_gamma).device
    if exclusive and scalar:
        raise ValueError("exclusive=True applies to vector gates [B, T, H, D] only")
    out = empty(*((B, T, H) if scalar else (B, T, H, D)), dtype=torch.float32, device=device)
    out_x = torch.empty_like(out) if exclusive else None
    grid = (cdiv(D, BD), layout.row_chunks, B * H)
    chunk_local_cumsum_kernel[grid](
        g, g_gamma, out, out_x, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, D=D, BT=layout.chunk_size, BD=BD, SCALAR=scalar, REVERSE=reverse,
    )  # fmt: skip
    return (out, out_x) if exclusive else out


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def global_cumsum_kernel(
    g,
    out,
    cu_seqlens,
    scale,
    T,
    H: tl.constexpr,
    BT: tl.constexpr,
    REVERSE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    NT = tl.cdiv(T_n, BT)
    b_carry = tl.zeros([1], dtype=tl.float32)  # the sum of the blocks already done
    for i_c in range(0, NT):
        i_t = NT - 1 - i_c if REVERSE else i_c
        o_t = i_t * BT + tl.arange(0, BT)  # [BT] positions inside the sequence
        m_t = o_t < T_n
        o_g = (bos + o_t) * H + i_h  # [BT]
        b_g = tl.load(g + o_g, mask=m_t, other=0.0).to(tl.float32) * scale
        tl.store(out + o_g, tl.cumsum(b_g, axis=0, reverse=REVERSE) + b_carry, mask=m_t)
        b_carry += tl.sum(b_g, axis=0)


def global_cumsum(
    g: torch.Tensor, cu_seqlens: torch.Tensor | None = None, reverse: bool = False, scale: float = 1.0
) -> torch.Tensor:
    """Cumulative sum of scalar gates over each whole sequence (not chunk-local), float32.

    Args:
        g: ``[B, T, H]`` (any float dtype).
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``): the sum restarts at every sequence.
        reverse: ``out_t = sum_{s >= t} g_s`` instead of ``sum_{s <= t}``.
        scale: multiplies ``g`` before summing.
    Returns:
        ``[B, T, H]`` float32.
    """
    B, T, H = g.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    out = empty(B, T, H, dtype=torch.float32, device=g.device)
    global_cumsum_kernel[(N, H)](g, out, cu_seqlens, float(scale), T, H=H, BT=128, REVERSE=reverse)
    return out


def global_cumsum_torch(
    g: torch.Tensor, cu_seqlens: torch.Tensor | None = None, reverse: bool = False, scale: float = 1.0
) -> torch.Tensor:
    """:func:`global_cumsum` in PyTorch (float32, float64 for float64 inputs); differentiable."""
    x = g.to(torch.promote_types(g.dtype, torch.float32)) * scale
    if reverse:
        x = x.flip(1)
    if cu_seqlens is None:
        out = x.cumsum(1)
    else:
        bounds = cu_seqlens.tolist()
        if reverse:  # the flipped row holds the sequences in reverse order
            total = bounds[-1]
            bounds = [total - b for b in reversed(bounds)]
        out = torch.cat([x[:, a:b].cumsum(1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    return out.flip(1) if reverse else out
