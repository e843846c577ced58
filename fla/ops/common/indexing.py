"""Triton helpers that locate a chunk or a sequence in the token-major layout ``[B, T, H, ...]``.

Dense inputs: sequence ``b`` starts at token ``b * T`` and owns chunks ``b * NT ..``. Varlen inputs
(``B == 1``): ``cu_seqlens`` gives the token bounds, ``chunk_indices [NC, 2]`` rows
``(sequence, chunk within it)`` (a grid row is then the global chunk index) and ``chunk_offsets
[N+1]`` each sequence's first global chunk (:mod:`fla.ops.utils.index`).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def token_bounds(i_n, cu_seqlens, T, IS_VARLEN: tl.constexpr):
    """For sequence ``i_n``: ``(bos, T_n)`` = its first token and its length."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T_n = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        T_n = T
    return bos, T_n


@triton.jit
def chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """For grid row ``i_t`` of batch ``i_b``: ``(bos, T_n, i_tc, i_ch)`` = first token of the
    sequence, its length, the chunk index inside the sequence, and the global chunk index."""
    _, bos, T_n, i_tc, i_ch = sequence_chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    return bos, T_n, i_tc, i_ch


@triton.jit
def sequence_chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """:func:`chunk_bounds` with the sequence's index first: ``(i_n, bos, T_n, i_tc, i_ch)`` (``i_n`` for the
    per-sequence rows a kernel reads, e.g. an initial or final state's gradient)."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_tc = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
        i_ch = i_t
    else:
        i_n = i_b
        i_tc = i_t
        i_ch = i_b * tl.cdiv(T, BT) + i_t
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    return i_n, bos, T_n, i_tc, i_ch


@triton.jit
def sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """For sequence ``i_n``: ``(bos, T_n, NT_n, boh)`` = first token, length, number of chunks and
    the global index of its first chunk."""
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    if IS_VARLEN:
        boh = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        boh = i_n * tl.cdiv(T, BT)
    return bos, T_n, tl.cdiv(T_n, BT), boh


@triton.jit
def state_block(i_k, i_v, K, V, BK: tl.constexpr, BV: tl.constexpr):
    """Block ``(i_k, i_v)`` of a ``[K, V]`` state (row-major): ``(o_k [BK], o_v [BV], m_k, m_v, o_kv [BK, BV],
    m_kv)`` = its key and value offsets, their masks, and its offsets / mask inside one state."""
    o_k = i_k * BK + tl.arange(0, BK)  # [BK]
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_k, m_v = o_k < K, o_v < V
    return o_k, o_v, m_k, m_v, o_k[:, None] * V + o_v[None, :], m_k[:, None] & m_v[None, :]
