"""The per-token linear solves of MesaNet's chunked form: ``x_t = (H^kk_t + diag(lamb))^{-1} rhs_t`` by a fixed
number of conjugate-gradient steps from ``x = 0``, one program per chunk and head (Triton).

Inside a chunk, with ``h`` the state before it, ``G`` the chunk-local cumsum of the log decays and
``M_ts = exp(G_t - G_s) beta_s`` for ``s <= t`` (0 above the diagonal), the operator on the chunk's rows
``P [BT, K]`` (one vector per token) is::

    A(P) = (P * exp(G)) h + ((P k^T) * M) k + P * lamb

so a CG step costs three ``tl.dot`` s on ``[BT, K]`` tiles and ``h``, ``k``, ``M`` stay in registers for
every step. The products take ``k``'s dtype (``h`` and each step's ``p`` are cast to it; float32 accumulation):
16-bit inputs get tensor-core products and half the registers for ``h`` (a float32 ``[128, 128]`` tile alone is
64 registers a thread at 8 warps), as fla 0.6.0's solve does; float32 inputs keep exact products.
The forward solves for the queries, the backward for the gradient of ``x`` (the adjoint system: ``A`` is
symmetric).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.ops.mesa_net.naive import CG_EPS
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2

MAX_HEAD_DIM = 128
"""The largest key width the Triton solve takes (the ``[K, K]`` state tile stays in registers)."""


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def mesa_net_cg_fwd_kernel(
    rhs,
    k,
    beta,
    G,
    h,
    lamb,
    x,
    cu_seqlens,
    chunk_indices,
    eps,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    ITERS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    eps = tl.cast(eps, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_t = i_tc * BT + tl.arange(0, BT)  # [BT] positions inside the sequence
    m_t = o_t < T_n
    o_k = tl.arange(0, BK)  # [BK]
    m_k = o_k < K
    o_tk = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
    m_tk = m_t[:, None] & m_k[None, :]

    # the operator's operands (k, h) in k's dtype, as fla 0.6.0's solve: 16-bit tensor-core products with float32
    # accumulation (the iterates x, r, p stay float32); float32 inputs keep exact float32 products
    b_k = tl.load(k + o_tk, mask=m_tk, other=0.0)  # [BT, BK]
    b_r = tl.load(rhs + o_tk, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK] residual (x = 0)
    b_G = tl.load(G + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    b_beta = tl.load(beta + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    o_kk = o_k[:, None] * K + o_k[None, :]  # [BK, BK]
    m_kk = m_k[:, None] & m_k[None, :]
    b_h = tl.load(h + (i_ch * H + i_h) * K * K + o_kk, mask=m_kk, other=0.0).to(b_k.dtype)  # [BK, BK]
    b_lamb = tl.load(lamb + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]

    # M_ts = exp(G_t - G_s) beta_s on and below the diagonal (the exponent is <= 0 there)
    m_ts = (o_t[:, None] >= o_t[None, :]) & m_t[:, None] & m_t[None, :]  # [BT, BT]
    b_M = tl.where(m_ts, tl.exp(tl.where(m_ts, b_G[:, None] - b_G[None, :], 0.0)), 0.0) * b_beta[None, :]
    b_eG = tl.exp(b_G)[:, None]  # [BT, 1]

    b_x = tl.zeros([BT, BK], dtype=tl.float32)
    b_p = b_r
    b_delta = tl.sum(b_r * b_r, axis=1)  # [BT]
    for _ in range(ITERS):
        b_A = tl.dot(b_p.to(b_k.dtype), tl.trans(b_k), input_precision=DOT_PRECISION) * b_M  # [BT, BT]
        b_Ap = tl.dot(b_A.to(b_k.dtype), b_k, input_precision=DOT_PRECISION)
        b_Ap += tl.dot((b_p * b_eG).to(b_k.dtype), b_h, input_precision=DOT_PRECISION)
        b_Ap += b_p * b_lamb[None, :]  # [BT, BK]
        b_alpha = b_delta / (tl.sum(b_p * b_Ap, axis=1) + eps)
        b_x += b_alpha[:, None] * b_p
        b_r -= b_alpha[:, None] * b_Ap
        b_delta_new = tl.sum(b_r * b_r, axis=1)
        b_p = b_r + (b_delta_new / (b_delta + eps))[:, None] * b_p
        b_delta = b_delta_new
    tl.store(x + o_tk, b_x.to(x.dtype.element_ty), mask=m_tk)


def chunk_cg_solve(
    rhs: torch.Tensor,
    k: torch.Tensor,
    beta: torch.Tensor,
    G: torch.Tensor,
    h_kk: torch.Tensor,
    lamb: torch.Tensor,
    iters: int,
    layout: ChunkLayout,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``x_t = A_t^{-1} rhs_t`` by ``iters`` CG steps from 0 (see the module docstring).

    Args:
        rhs, k: ``[B, T, H, K]`` (contiguous); beta: ``[B, T, H]``; G: ``[B, T, H]`` chunk-local cumsum of the
            log decays (float32); h_kk: ``[B, NT, H, K, K]`` states before each chunk
            (:func:`fla.ops.common.chunk_h.chunk_fwd_h`); lamb: ``[H, K]``; layout: the chunking.
        out_dtype: dtype of ``x`` (default ``rhs.dtype``).
    Returns:
        ``x [B, T, H, K]``.
    """
    B, T, H, K = rhs.shape
    if K > MAX_HEAD_DIM:
        raise ValueError(f"chunk_mesa_net: head dim K={K} > {MAX_HEAD_DIM} is not supported by the Triton kernels")
    x = empty(B, T, H, K, dtype=out_dtype or rhs.dtype, device=rhs.device)
    BK = max(16, next_power_of_2(K))
    mesa_net_cg_fwd_kernel[(layout.row_chunks, B * H)](
        rhs, k, beta, G, h_kk, lamb.contiguous(), x, layout.cu_seqlens, layout.chunk_indices, CG_EPS, T,
        H=H, K=K, BT=layout.chunk_size, BK=BK, ITERS=iters, DOT_PRECISION=dot_precision(k.dtype),
        num_warps=4 if BK <= 64 else 8, num_stages=1,
    )  # fmt: skip
    return x


__all__ = ["MAX_HEAD_DIM", "chunk_cg_solve"]
