"""RWKV6's bonus term ``o_t += scale * ((r_t * u) . k_t) v_t`` in the chunk pipeline: two Triton kernels.

The bonus is the diagonal of the strictly causal scores ``A [B, T, H, BT]`` (row ``t``, column ``t mod BT``
with positions counted from each sequence's start, as the chunks are).

* :func:`add_bonus_diagonal` writes ``A_tt = scale * sum_k r_tk u_k k_tk`` into ``A`` in place.
* :func:`finish_bonus_grads` adds the bonus' own gradients to the pipeline's ``dr, dk``, with
  ``s_t = scale * do_t . v_t``: ``dr_t += s_t u * k_t``, ``dk_t += s_t u * r_t``, and returns
  ``du = sum_t s_t r_t * k_t`` (its ``v`` gradient comes with ``A``'s diagonal through the ``dv`` stage).

One program per chunk and head, ``[BT, BK]`` tiles; the casts to the inputs' dtypes happen at the store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import block_size, given_heuristics
from fla.utils import empty
from fla.utils.launch import lean_launch


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def rwkv6_bonus_fwd_kernel(
    r,
    k,
    u,
    A,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_i = tl.arange(0, BT)
    o_t = i_tc * BT + o_i  # [BT] positions in the sequence
    m_t = o_t < T_n
    b_d = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        o_tk = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
        m_tk = m_t[:, None] & m_k[None, :]
        b_r = tl.load(r + o_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_k = tl.load(k + o_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_u = tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_d += tl.sum(b_r * b_k * b_u[None, :], axis=1)
    tl.store(A + ((bos + o_t) * H + i_h) * BT + o_i, (b_d * scale).to(A.dtype.element_ty), mask=m_t)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def rwkv6_bonus_bwd_kernel(
    r,
    k,
    v,
    u,
    do,
    dr,
    dk,
    dr_out,
    dk_out,
    du_part,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_t = i_tc * BT + tl.arange(0, BT)  # [BT]
    m_t = o_t < T_n
    b_s = tl.zeros([BT], dtype=tl.float32)  # scale * do_t . v_t
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        o_tv = ((bos + o_t[:, None]) * H + i_h) * V + o_v[None, :]  # [BT, BV]
        m_tv = m_t[:, None] & (o_v < V)[None, :]
        b_do = tl.load(do + o_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_v = tl.load(v + o_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_s += tl.sum(b_do * b_v, axis=1)
    b_s *= scale
    # du partial sums: one row per program (its chunk, batch entry and head)
    o_part = (i_t * tl.num_programs(1).to(tl.int64) + i_bh) * K
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        o_tk = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
        m_tk = m_t[:, None] & m_k[None, :]
        b_r = tl.load(r + o_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_k = tl.load(k + o_tk, mask=m_tk, other=0.0).to(tl.float32)
        b_su = b_s[:, None] * tl.load(u + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)[None, :]
        b_dr = tl.load(dr + o_tk, mask=m_tk, other=0.0).to(tl.float32) + b_su * b_k
        b_dk = tl.load(dk + o_tk, mask=m_tk, other=0.0).to(tl.float32) + b_su * b_r
        tl.store(dr_out + o_tk, b_dr.to(dr_out.dtype.element_ty), mask=m_tk)
        tl.store(dk_out + o_tk, b_dk.to(dk_out.dtype.element_ty), mask=m_tk)
        tl.store(du_part + o_part + o_k, tl.sum(b_s[:, None] * b_r * b_k, axis=0), mask=m_k)


def add_bonus_diagonal(A: torch.Tensor, r: torch.Tensor, k: torch.Tensor, u: torch.Tensor, scale: float,
                       layout: ChunkLayout) -> torch.Tensor:  # fmt: skip
    """Write the bonus ``scale * (r_t * u) . k_t`` on the diagonal of the strict scores ``A [B, T, H, BT]``
    (in place; returns ``A``). ``r, k``: ``[B, T, H, K]``; ``u``: ``[H, K]``."""
    B, T, H, K = r.shape
    rwkv6_bonus_fwd_kernel[(layout.row_chunks, B * H)](
        r, k, u, A, layout.cu_seqlens, layout.chunk_indices, scale, T, H=H, K=K, BT=layout.chunk_size,
        BK=block_size(K),
    )  # fmt: skip
    return A


def finish_bonus_grads(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    u: torch.Tensor,
    do: torch.Tensor,
    dr: torch.Tensor,
    dk: torch.Tensor,
    scale: float,
    layout: ChunkLayout,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dr, dk`` (the pipeline's, ``[B, T, H, K]`` any float dtype) plus the bonus' parts, in ``r``'s / ``k``'s
    dtypes, and ``du [H, K]`` float32. ``v, do``: ``[B, T, H, V]``; ``u``: ``[H, K]``."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    dr_out = empty(B, T, H, K, dtype=r.dtype, device=r.device)
    dk_out = empty(B, T, H, K, dtype=k.dtype, device=k.device)
    du_part = empty(layout.row_chunks, B, H, K, dtype=torch.float32, device=r.device)
    rwkv6_bonus_bwd_kernel[(layout.row_chunks, B * H)](
        r, k, v, u, do, dr, dk, dr_out, dk_out, du_part, layout.cu_seqlens, layout.chunk_indices, scale, T,
        H=H, K=K, V=V, BT=layout.chunk_size, BK=block_size(K), BV=block_size(V),
    )  # fmt: skip
    return dr_out, dk_out, du_part.sum((0, 1))
