"""PaTH attention: the inference forward in Triton (UT / WY chunk factors + a flash-style walk over key chunks),
the key cache, and the public op (training goes through :mod:`fla.ops.path_attn.chunked`).

Pipeline (``README.md`` has the maths; chunks of ``BT = 64`` tokens, one per grid row):

1. ``Tm = (I + strict_lower(diag(beta) W W^T))^{-1}`` per chunk: the delta-rule solve of
   :func:`fla.ops.common.wy.chunk_delta_solve` with ``w`` as its keys.
2. :func:`path_attn_prepare_kernel` (per chunk and key head): ``U = Tm diag(beta) W`` (the chunk's product of
   Householder factors is ``I - W^T U``), ``TM = Tm strict_lower(diag(beta) W k^T)`` and the keys carried to
   the end of their chunk, ``k_hat = k - TM^T W``.
3. :func:`path_attn_fwd_kernel` (per query chunk and query head): the diagonal block's scores
   ``tril(q k^T) - tril(q W^T) TM``, then the queries carried to the chunk's start,
   ``q <- q - tril(q W^T) U``, and key chunks ``c-1, c-2, .., 0``: scores ``q k_hat^T``, then
   ``q <- q - (q W^T) U`` past that chunk; online softmax in float32, ``o`` and ``lse`` stored.
4. :func:`path_attn_key_cache_kernel` (``use_cache``): ``k_hat`` carried through every later chunk of its
   sequence, ``k <- k - (k U^T) W``: the keys as the sequence's last token sees them.

Training (inputs that need gradients): :func:`fla.ops.path_attn.chunked.path_attn_chunked`, the chunk-local
factors by autograd and the walk as a Triton autograd Function with its own backward kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.inputs import check_attn_inputs
from fla.ops.common.cumsum import global_cumsum
from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.online_softmax import online_softmax_step
from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.ops.common.wy import chunk_delta_solve
from fla.ops.path_attn.chunked import path_attn_chunked
from fla.ops.path_attn.naive import path_attn_torch, path_transform_keys
from fla.utils import check_dtype, check_shape, empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2

BT = 64  # tokens per chunk (the solve's chunk size) = queries per program = keys per step


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(4,), stages=(1, 2)), key=["H", "K", "BK", "DOT_PRECISION"])
@triton.jit(do_not_specialize=["T"])
def path_attn_prepare_kernel(
    k,
    w,
    beta,
    Tm,
    u,
    tm,
    k_hat,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_i = i_tc * BT + tl.arange(0, BT)  # [BT] token positions in the sequence
    o_c, o_k = tl.arange(0, BT), tl.arange(0, BK)  # [BT] positions in the chunk, [BK]
    m_i, m_k = o_i < T_n, o_k < K
    m_ik = m_i[:, None] & m_k[None, :]
    o_ik = ((bos + o_i[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK]
    o_ic = ((bos + o_i[:, None]) * H + i_h) * BT + o_c[None, :]  # [BT, BT] rows of a per-chunk matrix
    m_ic = m_i[:, None] & (i_tc * BT + o_c[None, :] < T_n)
    b_w = tl.load(w + o_ik, mask=m_ik, other=0.0).to(tl.float32)  # [BT, BK]
    b_k = tl.load(k + o_ik, mask=m_ik, other=0.0).to(tl.float32)  # [BT, BK]
    b_beta = tl.load(beta + (bos + o_i) * H + i_h, mask=m_i, other=0.0).to(tl.float32)  # [BT]
    b_Tm = tl.load(Tm + o_ic, mask=m_ic, other=0.0)  # [BT, BT] unit lower triangular
    b_bw = b_w * b_beta[:, None]  # diag(beta) W
    b_u = tl.dot(b_Tm, b_bw, input_precision=DOT_PRECISION)  # [BT, BK]
    b_m = tl.dot(b_bw, tl.trans(b_k), input_precision=DOT_PRECISION)  # [BT, BT]: beta_r w_r . k_j
    b_m = tl.where(o_c[:, None] > o_c[None, :], b_m, 0.0)  # r > j
    b_tm = tl.dot(b_Tm, b_m, input_precision=DOT_PRECISION)  # [BT, BT]
    b_kh = b_k - tl.dot(tl.trans(b_tm), b_w, input_precision=DOT_PRECISION)  # [BT, BK]
    tl.store(u + o_ik, b_u, mask=m_ik)
    tl.store(k_hat + o_ik, b_kh, mask=m_ik)
    tl.store(tm + o_ic, b_tm, mask=m_i[:, None])


@lean_launch
@given_heuristics(USE_G="g", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=autotune_configs(warps=(4, 8), stages=(1,)),  # 2 stages at K = 128: > 227 KB shared memory
    key=["HQ", "G", "K", "V", "BK", "BV", "USE_G", "DOT_PRECISION"],
)
@triton.jit(do_not_specialize=["T"])
def path_attn_fwd_kernel(
    q,
    k,
    v,
    w,
    u,
    tm,
    k_hat,
    g,
    o,
    lse,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    HQ: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_G: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_hq = i_bh // HQ, i_bh % HQ
    i_h = i_hq // G  # the key head (and Householder head) of this query head
    H: tl.constexpr = HQ // G
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)

    o_c, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    o_i = i_tc * BT + o_c  # [BT] query (and diagonal key) positions
    m_i, m_k, m_v = o_i < T_n, o_k < K, o_v < V
    m_ik, m_iv = m_i[:, None] & m_k[None, :], m_i[:, None] & m_v[None, :]
    o_ik = ((bos + o_i[:, None]) * H + i_h) * K + o_k[None, :]  # [BT, BK] key-head rows
    b_q = tl.load(q + ((bos + o_i[:, None]) * HQ + i_hq) * K + o_k[None, :], mask=m_ik, other=0.0).to(tl.float32)
    if USE_G:
        b_gq = tl.load(g + (bos + o_i) * HQ + i_hq, mask=m_i, other=0.0)  # [BT] G at the queries

    # the diagonal block: s_ij = q_i . k_j - sum_s [s <= i] (q_i . w_s) TM_sj
    b_w = tl.load(w + o_ik, mask=m_ik, other=0.0).to(tl.float32)
    b_u = tl.load(u + o_ik, mask=m_ik, other=0.0)
    b_k = tl.load(k + o_ik, mask=m_ik, other=0.0).to(tl.float32)
    b_v = tl.load(v + ((bos + o_i[:, None]) * H + i_h) * V + o_v[None, :], mask=m_iv, other=0.0)
    b_tm = tl.load(tm + ((bos + o_i[:, None]) * H + i_h) * BT + o_c[None, :], mask=m_i[:, None], other=0.0)
    m_causal = (o_c[:, None] >= o_c[None, :]) & m_i[:, None] & m_i[None, :]
    b_qw = tl.where(o_c[:, None] >= o_c[None, :], tl.dot(b_q, tl.trans(b_w), input_precision=DOT_PRECISION), 0.0)
    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=DOT_PRECISION)
    b_s -= tl.dot(b_qw, b_tm, input_precision=DOT_PRECISION)  # [BT, BT]
    if USE_G:
        b_s += b_gq[:, None] - b_gq[None, :]
    b_s = tl.where(m_causal, b_s * scale, float("-inf"))
    b_m = tl.max(b_s, 1)  # every valid query sees itself; padded rows are -inf throughout
    b_m = tl.where(m_i, b_m, 0.0)
    b_p = tl.exp(b_s - b_m[:, None])
    b_l = tl.sum(b_p, 1)
    b_o = tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)  # [BT, BV] float32
    b_q -= tl.dot(b_qw, b_u, input_precision=DOT_PRECISION)  # q_i^T H_i ... H_first(chunk)

    for i_j in range(0, i_tc):  # earlier (full) key chunks, nearest first
        o_j = (i_tc - 1 - i_j) * BT + o_c  # [BT] key positions
        o_jk = ((bos + o_j[:, None]) * H + i_h) * K + o_k[None, :]
        m_jk = (o_j[:, None] < T_n) & m_k[None, :]
        b_kh = tl.load(k_hat + o_jk, mask=m_jk, other=0.0)  # [BT, BK]
        b_vj = tl.load(v + ((bos + o_j[:, None]) * H + i_h) * V + o_v[None, :], mask=m_v[None, :], other=0.0)
        b_wj = tl.load(w + o_jk, mask=m_jk, other=0.0).to(tl.float32)
        b_uj = tl.load(u + o_jk, mask=m_jk, other=0.0)
        b_s = tl.dot(b_q, tl.trans(b_kh), input_precision=DOT_PRECISION)  # [BT, BT]
        if USE_G:
            b_gk = tl.load(g + (bos + o_j) * HQ + i_hq)
            b_s += b_gq[:, None] - b_gk[None, :]
        b_s = b_s * scale
        b_m, b_l, b_o = online_softmax_step(b_s, b_vj, b_m, b_l, b_o, DOT_PRECISION)
        # carry the queries past this chunk: q <- q (I - W^T U)
        b_q -= tl.dot(tl.dot(b_q, tl.trans(b_wj), input_precision=DOT_PRECISION), b_uj, input_precision=DOT_PRECISION)

    b_l = tl.where(m_i, b_l, 1.0)
    b_o = b_o / b_l[:, None]
    tl.store(o + ((bos + o_i[:, None]) * HQ + i_hq) * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_iv)
    tl.store(lse + (bos + o_i) * HQ + i_hq, b_m + tl.log(b_l), mask=m_i)


@lean_launch
@given_heuristics(IS_VARLEN="cu_seqlens")
@triton.autotune(configs=autotune_configs(warps=(4,), stages=(1, 2)), key=["H", "K", "BK", "DOT_PRECISION"])
@triton.jit(do_not_specialize=["T"])
def path_attn_key_cache_kernel(
    k_hat,
    w,
    u,
    k_cache,
    cu_seqlens,
    chunk_indices,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, _ = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_c, o_k = tl.arange(0, BT), tl.arange(0, BK)
    o_i = i_tc * BT + o_c
    m_ik = (o_i[:, None] < T_n) & (o_k[None, :] < K)
    o_ik = ((bos + o_i[:, None]) * H + i_h) * K + o_k[None, :]
    b_k = tl.load(k_hat + o_ik, mask=m_ik, other=0.0)  # [BT, BK]
    for i_j in range(i_tc + 1, tl.cdiv(T_n, BT)):  # later chunks: k <- (I - W^T U) k, as rows
        o_j = i_j * BT + o_c
        o_jk = ((bos + o_j[:, None]) * H + i_h) * K + o_k[None, :]
        m_jk = (o_j[:, None] < T_n) & (o_k[None, :] < K)
        b_wj = tl.load(w + o_jk, mask=m_jk, other=0.0).to(tl.float32)
        b_uj = tl.load(u + o_jk, mask=m_jk, other=0.0)
        b_k -= tl.dot(tl.dot(b_k, tl.trans(b_uj), input_precision=DOT_PRECISION), b_wj, input_precision=DOT_PRECISION)
    tl.store(k_cache + o_ik, b_k.to(k_cache.dtype.element_ty), mask=m_ik)


def _blocks(K: int, V: int) -> tuple[int, int]:
    """Whole head dims as one power-of-two tile (>= 16)."""
    return max(16, next_power_of_2(K)), max(16, next_power_of_2(V))


def path_attn_prepare(
    k: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, layout: ChunkLayout
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stages 1-2: ``U [B, T, H, K]``, ``TM [B, T, H, BT]`` and ``k_hat [B, T, H, K]``, all float32."""
    B, T, H, K = k.shape
    Tm = chunk_delta_solve(w, beta, layout)  # [B, T, H, BT] fp32
    u = empty(B, T, H, K, dtype=torch.float32, device=k.device)
    k_hat = empty(B, T, H, K, dtype=torch.float32, device=k.device)
    tm = empty(B, T, H, BT, dtype=torch.float32, device=k.device)
    BK, _ = _blocks(K, K)
    path_attn_prepare_kernel[(layout.row_chunks, B * H)](
        k, w, beta, Tm, u, tm, k_hat, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, BT=BT, BK=BK, DOT_PRECISION=dot_precision(k.dtype),
    )  # fmt: skip
    return u, tm, k_hat


def path_attn_key_cache(
    k_hat: torch.Tensor, w: torch.Tensor, u: torch.Tensor, layout: ChunkLayout, dtype: torch.dtype
) -> torch.Tensor:
    """Stage 4: ``k_hat`` carried through every later chunk of its sequence, ``[B, T, H, K]`` in ``dtype``."""
    B, T, H, K = k_hat.shape
    k_cache = empty(B, T, H, K, dtype=dtype, device=k_hat.device)
    BK, _ = _blocks(K, K)
    path_attn_key_cache_kernel[(layout.row_chunks, B * H)](
        k_hat, w, u, k_cache, layout.cu_seqlens, layout.chunk_indices, T,
        H=H, K=K, BT=BT, BK=BK, DOT_PRECISION=dot_precision(dtype),
    )  # fmt: skip
    return k_cache


def path_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    G: torch.Tensor | None,
    scale: float,
    layout: ChunkLayout,
    use_cache: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The inference forward (contiguous inputs, no autograd): ``o [B, T, HQ, V]`` (``q.dtype``),
    ``lse [B, T, HQ]`` float32 and, with ``use_cache``, the transformed keys ``[B, T, H, K]`` (``k.dtype``).
    ``G``: float32 per-sequence gate cumsum or ``None``."""
    B, T, HQ, K = q.shape
    H, V = k.shape[2], v.shape[-1]
    BK, BV = _blocks(K, V)
    u, tm, k_hat = path_attn_prepare(k, w, beta, layout)
    o = empty(B, T, HQ, V, dtype=q.dtype, device=q.device)
    lse = empty(B, T, HQ, dtype=torch.float32, device=q.device)
    cu, idx = layout.cu_seqlens, layout.chunk_indices
    path_attn_fwd_kernel[(layout.row_chunks, B * HQ)](
        q, k, v, w, u, tm, k_hat, G, o, lse, cu, idx, scale, T,
        HQ=HQ, G=HQ // H, K=K, V=V, BT=BT, BK=BK, BV=BV, DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    k_cache = path_attn_key_cache(k_hat, w, u, layout, k.dtype) if use_cache else None
    return o, lse, k_cache


def check_path_inputs(q, k, v, w, beta, g, cu_seqlens) -> None:
    """q ``[B, T, HQ, K]``, k / w ``[B, T, H, K]``, v ``[B, T, H, V]``, beta ``[B, T, H]``, g ``[B, T, HQ]``,
    cu_seqlens ``[N+1]`` (errors name the argument and the shapes)."""
    check_attn_inputs(q, k, v, g, None, cu_seqlens)
    check_shape("w", w, tuple(k.shape), "[B, T, H, K] (k's shape)")
    check_dtype("w", w)
    check_shape("beta", beta, tuple(k.shape[:3]), "[B, T, H]")
    check_dtype("beta", beta)
    for name, t in (("w", w), ("beta", beta)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")


def _path_triton(q, k, v, w, beta, g, scale, cu_seqlens, use_cache):
    inputs = (q, k, v, w, beta, g)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        o = path_attn_chunked(q, k, v, w, beta, g, scale, cu_seqlens)  # training: differentiable
        k_cache = None
        if use_cache:
            with torch.no_grad():
                layout = ChunkLayout.build(q, cu_seqlens, BT)
                u, _, k_hat = path_attn_prepare(k.contiguous(), w.contiguous(), beta.contiguous(), layout)
                k_cache = path_attn_key_cache(k_hat, w.contiguous(), u, layout, k.dtype)
        return o, k_cache
    q, k, v, w, beta = (t.contiguous() for t in (q, k, v, w, beta))
    layout = ChunkLayout.build(q, cu_seqlens, BT)
    G = None if g is None else global_cumsum(g.contiguous(), cu_seqlens)
    o, _, k_cache = path_attn_fwd(q, k, v, w, beta, G, scale, layout, use_cache)
    return o, k_cache


def _path_torch(q, k, v, w, beta, g, scale, cu_seqlens, use_cache):
    o = path_attn_torch(q, k, v, w, beta, g, scale, cu_seqlens)
    k_cache = path_transform_keys(k.detach(), w.detach(), beta.detach(), cu_seqlens) if use_cache else None
    return o, k_cache


@torch.compiler.disable  # host-side chunk bookkeeping (as fla 0.6.0's op, which is disabled too)
def parallel_path_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    use_cache: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PaTH attention (fla 0.6.0's ``parallel_path_attn``): causal softmax attention whose scores carry the
    product of the Householder factors ``H_t = I - beta_t w_t w_t^T`` between key and query,
    ``s_ij = scale * (q_i^T H_i ... H_{j+1} k_j + G_i - G_j)`` (``G`` the per-sequence cumsum of ``g``).

    Args:
        q: ``[B, T, HQ, K]``; k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (``H`` divides ``HQ``).
        w: ``[B, T, H, K]`` Householder directions (unit norm in the layer: ``l2_norm``); float32 advised.
        beta: ``[B, T, H]`` Householder strengths (``2 sigmoid(.)`` in the layer, in ``(0, 2)``).
        g: ``[B, T, HQ]`` log forget gates (FoX) or ``None``; as in fla, the gate is multiplied by ``scale``.
        scale: default ``K ** -0.5``.
        cu_seqlens: ``[N+1]`` int32/int64 packed sequence bounds (then ``B == 1``).
        use_cache: also return the keys as each sequence's last token sees them, ``H_last ... H_{j+1} k_j``
            (the decoding cache), not differentiable.
    Returns:
        ``o [B, T, HQ, V]`` in ``q.dtype`` and ``k_cache [B, T, H, K]`` (``None`` without ``use_cache``).
    """
    check_path_inputs(q, k, v, w, beta, g, cu_seqlens)
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    args = (q, k, v, w, beta, g, scale, cu_seqlens, use_cache)
    # autocast off: both paths form float32 pieces in PyTorch (the Triton path's chunk-local factors, the torch
    # path's scores and key cache); autocast would run those matmuls in bf16, handing the kernels a bf16 operand
    # beside a float32 one (a compile error in tl.dot) and mixing dtypes in the torch path's score buffer
    with torch.autocast(q.device.type, enabled=False):
        return dispatch((q, k, v, w, beta, g), _path_torch, _path_triton, *args)


parallel_path_attention = parallel_path_attn

__all__ = ["parallel_path_attention", "parallel_path_attn", "path_attn_fwd", "path_attn_key_cache", "path_attn_prepare"]
