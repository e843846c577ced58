"""PaTH attention's training path: chunk-local factors in PyTorch (autograd), the inter-chunk walk in Triton
(forward and backward).

Every sequence is cut into chunks of ``BT = 64`` tokens laid out chunk-major, ``[NC, BT, heads, ...]`` (the last
chunk of a sequence zero-padded; a sequence's chunks are consecutive rows). Per chunk, in PyTorch
(:func:`_local_factors`, differentiable, ``O(T BT K)``): ``U``, ``TM``, ``k_hat`` (``README.md``), the diagonal
block's scores ``a = tril(q k^T) - tril(q W^T) TM`` and the queries carried to the chunk's start
``x0 = q - tril(q W^T) U``; made again in the backward rather than kept. The walk over earlier chunks,
``O(T^2 K)``, is :class:`PathInterChunkFunction` (which also makes the factors):

* forward (:func:`path_inter_fwd_kernel`, query chunk x query head): the diagonal softmax from ``a``, then for
  key chunks ``c-1 .. 0``: scores ``x k_hat^T``, online softmax, ``x <- x - (x W^T) U``; ``o`` and ``lse``.
  The backward runs it again keeping every state ``x`` a score block used (``X [pairs, BT, HQ, K]`` float32, one
  per (query chunk, earlier key chunk) pair), alive during that layer's backward only.
* dq kernel (query chunk x query head): the key chunks farthest first with the adjoint ``y`` of the state,
  ``y <- y - (y U^T) W + scale ds k_hat``; per key chunk ``Phi += x^T y`` (``[K, K]``, atomics over query
  chunks), from which ``dU = -W Phi`` and ``dW = -U Phi^T``; ``dx0 = y``, ``da = scale ds`` on the diagonal.
* dkv kernel (key chunk x query head): ``dv = sum p^T do``, ``dk_hat = scale sum ds^T x`` over the later query
  chunks (and the diagonal block's ``dv``); the gate's column sums. Heads of a GQA group are summed afterwards.

Padded rows are harmless: a padded key sits after every real query of its chunk (causally masked) and a padded
query gets ``do = 0``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.attn.parallel import parallel_attn_bwd_delta
from fla.ops.common.cumsum import global_cumsum_torch
from fla.ops.common.online_softmax import online_softmax_step
from fla.ops.common.tuning import autotune_configs, dot_precision
from fla.ops.path_attn.naive import path_chunk_factors
from fla.utils import empty
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2
from fla.utils.tensors import contiguous

BT = 64
_KEY = ["HQ", "G", "K", "V", "BK", "BV", "USE_G", "DOT_PRECISION"]
_FWD_KEY = [*_KEY, "STORE_X"]


@triton.jit
def _scores(b_x, b_kh, b_gq, g, o_j, i_hq, scale, HQ: tl.constexpr, USE_G: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``scale * (x k_hat^T + G_i - G_j)`` ``[BT, BT]`` for a full earlier key chunk (rows ``o_j`` of ``g``)."""
    b_s = tl.dot(b_x, tl.trans(b_kh), input_precision=DOT_PRECISION)
    if USE_G:
        b_gk = tl.load(g + o_j * HQ + i_hq)
        b_s += b_gq[:, None] - b_gk[None, :]
    return b_s * scale


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(4, 8), stages=(1,)), key=_FWD_KEY)
@triton.jit
def path_inter_fwd_kernel(
    x0, a, k_hat, w, u, v, g, X, o, lse, chunk_pos, pair_off, scale,
    HQ: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, DOT_PRECISION: tl.constexpr, STORE_X: tl.constexpr,
):  # fmt: skip
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_hq = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    c = tl.load(chunk_pos + i_n).to(tl.int64)  # chunk index inside its sequence
    p0 = tl.load(pair_off + i_n).to(tl.int64)  # first state slot of this query chunk
    o_c, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    o_i = i_n * BT + o_c  # [BT] rows of the chunk layout
    m_k, m_v = o_k < K, o_v < V
    b_x = tl.load(x0 + (o_i[:, None] * HQ + i_hq) * K + o_k[None, :], mask=m_k[None, :], other=0.0)  # [BT, BK]
    b_gq = tl.zeros([BT], dtype=tl.float32)
    if USE_G:
        b_gq = tl.load(g + o_i * HQ + i_hq)
    b_s = tl.load(a + (o_i[:, None] * HQ + i_hq) * BT + o_c[None, :]) * scale  # [BT, BT] diagonal block
    if USE_G:
        b_s += (b_gq[:, None] - b_gq[None, :]) * scale
    b_s = tl.where(o_c[:, None] >= o_c[None, :], b_s, float("-inf"))
    b_m = tl.max(b_s, 1)
    b_p = tl.exp(b_s - b_m[:, None])
    b_l = tl.sum(b_p, 1)
    b_v = tl.load(v + (o_i[:, None] * H + i_h) * V + o_v[None, :], mask=m_v[None, :], other=0.0)
    b_o = tl.dot(b_p.to(b_v.dtype), b_v, input_precision=DOT_PRECISION)  # [BT, BV]
    for e in range(0, c):  # key chunks c-1 .. 0 (rows i_n-1 .. i_n-c), nearest first
        o_j = (i_n - 1 - e) * BT + o_c
        o_jk = (o_j[:, None] * H + i_h) * K + o_k[None, :]
        if STORE_X:  # the backward's recompute: keep the state this score block uses
            tl.store(X + (((p0 + e) * BT + o_c[:, None]) * HQ + i_hq) * K + o_k[None, :], b_x, mask=m_k[None, :])
        b_kh = tl.load(k_hat + o_jk, mask=m_k[None, :], other=0.0)
        b_s = _scores(b_x, b_kh, b_gq, g, o_j, i_hq, scale, HQ, USE_G, DOT_PRECISION)
        b_vj = tl.load(v + (o_j[:, None] * H + i_h) * V + o_v[None, :], mask=m_v[None, :], other=0.0)
        b_m, b_l, b_o = online_softmax_step(b_s, b_vj, b_m, b_l, b_o, DOT_PRECISION)
        b_wj = tl.load(w + o_jk, mask=m_k[None, :], other=0.0)
        b_uj = tl.load(u + o_jk, mask=m_k[None, :], other=0.0)
        b_x -= tl.dot(tl.dot(b_x, tl.trans(b_wj), input_precision=DOT_PRECISION), b_uj, input_precision=DOT_PRECISION)
    b_o = b_o / b_l[:, None]
    tl.store(o + (o_i[:, None] * HQ + i_hq) * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_v[None, :])
    tl.store(lse + o_i * HQ + i_hq, b_m + tl.log(b_l))


@lean_launch
# phi gathers every query chunk's atomic adds: zeroed before each timed launch and before the real one, or the
# autotuner's timing runs pile up in it (dw ~10x too large on an H100)
@triton.autotune(configs=autotune_configs(warps=(4, 8), stages=(1,)), key=_KEY, reset_to_zero=["phi"])
@triton.jit
def path_inter_bwd_dq_kernel(
    a, k_hat, w, u, v, g, X, lse, delta, do, dx0, da, dgq, phi, chunk_pos, pair_off, scale,
    HQ: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_hq = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    c = tl.load(chunk_pos + i_n).to(tl.int64)
    p0 = tl.load(pair_off + i_n).to(tl.int64)
    o_c, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    o_i = i_n * BT + o_c
    m_k, m_v = o_k < K, o_v < V
    b_do = tl.load(do + (o_i[:, None] * HQ + i_hq) * V + o_v[None, :], mask=m_v[None, :], other=0.0)  # [BT, BV]
    b_lse = tl.load(lse + o_i * HQ + i_hq)
    b_delta = tl.load(delta + o_i * HQ + i_hq)
    b_gq = tl.zeros([BT], dtype=tl.float32)
    if USE_G:
        b_gq = tl.load(g + o_i * HQ + i_hq)
    # the diagonal block
    b_s = tl.load(a + (o_i[:, None] * HQ + i_hq) * BT + o_c[None, :]) * scale
    if USE_G:
        b_s += (b_gq[:, None] - b_gq[None, :]) * scale
    m_causal = o_c[:, None] >= o_c[None, :]
    b_p = tl.where(m_causal, tl.exp(b_s - b_lse[:, None]), 0.0)
    b_vt = tl.load(v + (o_i[None, :] * H + i_h) * V + o_v[:, None], mask=m_v[:, None], other=0.0)  # [BV, BT]
    b_ds = b_p * (tl.dot(b_do, b_vt, input_precision=DOT_PRECISION) - b_delta[:, None])
    tl.store(da + (o_i[:, None] * HQ + i_hq) * BT + o_c[None, :], b_ds * scale)
    b_dg = tl.sum(b_ds, 1)
    b_y = tl.zeros([BT, BK], dtype=tl.float32)  # adjoint of the carried query state
    for t in range(0, c):  # key chunks 0 .. c-1, farthest first
        e = c - 1 - t
        i_j = i_n - 1 - e
        o_j = i_j * BT + o_c
        o_jk = (o_j[:, None] * H + i_h) * K + o_k[None, :]
        b_x = tl.load(X + (((p0 + e) * BT + o_c[:, None]) * HQ + i_hq) * K + o_k[None, :], mask=m_k[None, :], other=0.0)
        b_wj = tl.load(w + o_jk, mask=m_k[None, :], other=0.0)
        b_uj = tl.load(u + o_jk, mask=m_k[None, :], other=0.0)
        if t > 0:  # the carry past this chunk fed the farther ones: Phi_j += x^T y
            b_phi = tl.dot(tl.trans(b_x), b_y, input_precision=DOT_PRECISION)  # [BK, BK]
            p_phi = phi + ((i_j * HQ + i_hq) * BK + o_k[:, None]) * BK + o_k[None, :]
            tl.atomic_add(p_phi, b_phi)
            # y <- y (I - W^T U)^T = y - (y U^T) W
            b_yu = tl.dot(b_y, tl.trans(b_uj), input_precision=DOT_PRECISION)  # [BT, BT]
            b_y -= tl.dot(b_yu, b_wj, input_precision=DOT_PRECISION)
        b_kh = tl.load(k_hat + o_jk, mask=m_k[None, :], other=0.0)
        b_s = _scores(b_x, b_kh, b_gq, g, o_j, i_hq, scale, HQ, USE_G, DOT_PRECISION)
        b_p = tl.exp(b_s - b_lse[:, None])
        b_vt = tl.load(v + (o_j[None, :] * H + i_h) * V + o_v[:, None], mask=m_v[:, None], other=0.0)
        b_ds = b_p * (tl.dot(b_do, b_vt, input_precision=DOT_PRECISION) - b_delta[:, None])
        b_dg += tl.sum(b_ds, 1)
        b_y += tl.dot(b_ds * scale, b_kh, input_precision=DOT_PRECISION)
    tl.store(dx0 + (o_i[:, None] * HQ + i_hq) * K + o_k[None, :], b_y, mask=m_k[None, :])
    tl.store(dgq + o_i * HQ + i_hq, b_dg)


@lean_launch
@triton.autotune(configs=autotune_configs(warps=(4, 8), stages=(1,)), key=_KEY)
@triton.jit
def path_inter_bwd_dkv_kernel(
    a, k_hat, v, g, X, lse, delta, do, dkh, dv, dgk, chunk_pos, seq_chunks, pair_off, scale,
    HQ: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_n, i_hq = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_h = i_hq // G
    H: tl.constexpr = HQ // G
    c = tl.load(chunk_pos + i_n).to(tl.int64)
    n = tl.load(seq_chunks + i_n).to(tl.int64)
    o_c, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    o_j = i_n * BT + o_c  # this key chunk's rows
    m_k, m_v = o_k < K, o_v < V
    b_kh = tl.load(k_hat + (o_j[:, None] * H + i_h) * K + o_k[None, :], mask=m_k[None, :], other=0.0)  # [BT, BK]
    b_vt = tl.load(v + (o_j[None, :] * H + i_h) * V + o_v[:, None], mask=m_v[:, None], other=0.0)  # [BV, BT]
    b_gk = tl.zeros([BT], dtype=tl.float32)
    if USE_G:
        b_gk = tl.load(g + o_j * HQ + i_hq)
    # the diagonal block (queries = keys = this chunk)
    b_lse = tl.load(lse + o_j * HQ + i_hq)
    b_delta = tl.load(delta + o_j * HQ + i_hq)
    b_do = tl.load(do + (o_j[:, None] * HQ + i_hq) * V + o_v[None, :], mask=m_v[None, :], other=0.0)
    b_s = tl.load(a + (o_j[:, None] * HQ + i_hq) * BT + o_c[None, :]) * scale
    if USE_G:
        b_s += (b_gk[:, None] - b_gk[None, :]) * scale
    b_p = tl.where(o_c[:, None] >= o_c[None, :], tl.exp(b_s - b_lse[:, None]), 0.0)  # [BT q, BT k]
    b_dv = tl.dot(tl.trans(b_p).to(b_do.dtype), b_do, input_precision=DOT_PRECISION)  # [BT, BV]
    b_ds = b_p * (tl.dot(b_do, b_vt, input_precision=DOT_PRECISION) - b_delta[:, None])
    b_dg = -tl.sum(b_ds, 0)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for c2 in range(c + 1, n):  # later query chunks of the sequence
        i_q = i_n + (c2 - c)
        e = c2 - 1 - c  # this key chunk is the (e+1)-th before query chunk c2
        p0 = tl.load(pair_off + i_q).to(tl.int64)
        o_q = i_q * BT + o_c
        b_x = tl.load(X + (((p0 + e) * BT + o_c[:, None]) * HQ + i_hq) * K + o_k[None, :], mask=m_k[None, :], other=0.0)
        b_lse = tl.load(lse + o_q * HQ + i_hq)
        b_delta = tl.load(delta + o_q * HQ + i_hq)
        b_do = tl.load(do + (o_q[:, None] * HQ + i_hq) * V + o_v[None, :], mask=m_v[None, :], other=0.0)
        b_gq = tl.zeros([BT], dtype=tl.float32)
        if USE_G:
            b_gq = tl.load(g + o_q * HQ + i_hq)
        b_s = _scores(b_x, b_kh, b_gq, g, o_j, i_hq, scale, HQ, USE_G, DOT_PRECISION)  # [BT q, BT k]
        b_p = tl.exp(b_s - b_lse[:, None])
        b_dv += tl.dot(tl.trans(b_p).to(b_do.dtype), b_do, input_precision=DOT_PRECISION)
        b_ds = b_p * (tl.dot(b_do, b_vt, input_precision=DOT_PRECISION) - b_delta[:, None])
        b_dk += tl.dot(tl.trans(b_ds * scale), b_x, input_precision=DOT_PRECISION)
        b_dg -= tl.sum(b_ds, 0)
    tl.store(dkh + (o_j[:, None] * HQ + i_hq) * K + o_k[None, :], b_dk, mask=m_k[None, :])
    tl.store(dv + (o_j[:, None] * HQ + i_hq) * V + o_v[None, :], b_dv, mask=m_v[None, :])
    tl.store(dgk + o_j * HQ + i_hq, b_dg)


class PathInterChunkFunction(torch.autograd.Function):
    """The chunk-local factors and the inter-chunk walk of PaTH attention (module docstring): ``o [NC, BT, HQ, V]``
    from the token-layout ``q [B, T, HQ, K]``, ``k, w [B, T, H, K]``, ``beta [B, T, H]`` (any float dtype; cut
    into chunks by ``rows``), ``v [NC, BT, H, V]`` and ``G [NC, BT, HQ]`` (float32 gate cumsum, or ``None``).

    The backward makes the factors again (:func:`_chunked_factors` under autograd) instead of keeping them: they
    and their float32 intermediates were three quarters of what the op kept (20 -> 5 KiB per token at 4 heads x 64,
    the inputs included)."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, w, beta, rows, groups, v, G, chunk_pos, seq_chunks, pair_off, pairs, scale):
        x0, a, k_hat, W, U = _chunked_factors(q, k, w, beta, rows, groups)
        NC, _, HQ, K = x0.shape
        H, V = k_hat.shape[2], v.shape[-1]
        BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
        meta = dict(HQ=HQ, G=HQ // H, K=K, V=V, BT=BT, BK=BK, BV=BV, USE_G=G is not None,
                    DOT_PRECISION=dot_precision(v.dtype))  # fmt: skip
        o, lse, _ = _walk(x0, a, k_hat, W, U, v, G, chunk_pos, pair_off, None, scale, meta)
        ctx.save_for_backward(q, k, w, beta, rows, v, G, o, lse, chunk_pos, seq_chunks, pair_off)
        ctx.scale, ctx.meta, ctx.pairs, ctx.groups = scale, meta, pairs, groups
        return o

    @staticmethod
    @contiguous
    def backward(ctx, do):
        q, k, w, beta, rows, v, G, o, lse, chunk_pos, seq_chunks, pair_off = ctx.saved_tensors
        meta, scale = ctx.meta, ctx.scale
        leaves = [t.detach().requires_grad_(need) for t, need in zip((q, k, w, beta), ctx.needs_input_grad)]
        with torch.enable_grad():
            factors = _chunked_factors(*leaves, rows, ctx.groups)
        x0, a, k_hat, W, U = (t.detach() for t in factors)
        NC, _, H, K = k_hat.shape
        HQ, V, BK = meta["HQ"], meta["V"], meta["BK"]
        # the walk again, keeping every state: X lives for this layer's backward only
        _, _, X = _walk(x0, a, k_hat, W, U, v, G, chunk_pos, pair_off, ctx.pairs, scale, meta)
        delta = parallel_attn_bwd_delta(o.contiguous(), do.contiguous(), None)  # [NC, BT, HQ] float32
        dx0 = empty(NC, BT, HQ, K, dtype=torch.float32, device=v.device)
        da = empty(NC, BT, HQ, BT, dtype=torch.float32, device=v.device)
        dgq = empty(NC, BT, HQ, dtype=torch.float32, device=v.device)
        phi = torch.zeros(NC, HQ, BK, BK, dtype=torch.float32, device=v.device)
        path_inter_bwd_dq_kernel[(NC, HQ)](
            a, k_hat, W, U, v, G, X, lse, delta, do, dx0, da, dgq, phi, chunk_pos, pair_off, scale, **meta
        )  # fmt: skip
        dkh = empty(NC, BT, HQ, K, dtype=torch.float32, device=v.device)
        dv = empty(NC, BT, HQ, V, dtype=torch.float32, device=v.device)
        dgk = empty(NC, BT, HQ, dtype=torch.float32, device=v.device)
        path_inter_bwd_dkv_kernel[(NC, HQ)](
            a, k_hat, v, G, X, lse, delta, do, dkh, dv, dgk, chunk_pos, seq_chunks, pair_off, scale, **meta
        )  # fmt: skip
        del X
        groups = HQ // H
        phi = phi[..., :K, :K].view(NC, H, groups, K, K).sum(2)  # [NC, H, K, K]
        dkh = dkh.view(NC, BT, H, groups, K).sum(3)
        dv = dv.view(NC, BT, H, groups, V).sum(3)
        dU = -torch.einsum("nchk,nhkl->nchl", W, phi)  # dU = -W Phi
        dW = -torch.einsum("nchk,nhlk->nchl", U, phi)  # dW = -U Phi^T
        dG = None if G is None else (dgq + dgk) * scale  # the gate enters the scores times scale
        wanted = [t for t in leaves if t.requires_grad]
        linked = [(f, d) for f, d in zip(factors, (dx0, da, dkh, dW, dU)) if f.requires_grad]
        got = [None] * len(wanted)
        if wanted and linked:
            outs, grad_outs = zip(*linked)
            got = torch.autograd.grad(outs, wanted, grad_outs, allow_unused=True)
        got = iter(got)
        dq, dk, dw, dbeta = (next(got) if t.requires_grad else None for t in leaves)
        return dq, dk, dw, dbeta, None, None, dv.to(v.dtype), dG, None, None, None, None, None


def _walk(x0, a, k_hat, w, u, v, G, chunk_pos, pair_off, pairs: int | None, scale: float, meta: dict):
    """The forward kernel: ``(o, lse, X)``; ``X [pairs, BT, HQ, K]`` float32 only when ``pairs`` is given."""
    NC, _, HQ, K = x0.shape
    X = None if pairs is None else empty(max(pairs, 1), BT, HQ, K, dtype=torch.float32, device=x0.device)
    o = empty(NC, BT, HQ, meta["V"], dtype=v.dtype, device=v.device)
    lse = empty(NC, BT, HQ, dtype=torch.float32, device=v.device)
    path_inter_fwd_kernel[(NC, HQ)](
        x0, a, k_hat, w, u, v, G, X, o, lse, chunk_pos, pair_off, scale, STORE_X=X is not None, **meta
    )  # fmt: skip
    return o, lse, X


def chunk_layout(B: int, T: int, cu_seqlens: torch.Tensor | None, device) -> tuple:
    """The chunk-major layout of ``[B, T]`` tokens: ``(rows [NC, BT] token index into [B*T + 1] (B*T: a zero
    pad row), chunk_pos [NC], seq_chunks [NC], pair_off [NC] int32/int64, pairs)``."""
    if cu_seqlens is None:
        starts = torch.arange(B, device=device) * T
        lens = torch.full((B,), T, device=device)
    else:
        starts, lens = cu_seqlens[:-1].long(), (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    n = (lens + BT - 1) // BT  # chunks per sequence
    seq = torch.repeat_interleave(torch.arange(n.numel(), device=device), n)
    first = torch.cumsum(n, 0) - n
    pos = torch.arange(seq.numel(), device=device) - first[seq]
    offs = pos[:, None] * BT + torch.arange(BT, device=device)[None, :]  # [NC, BT] offsets in the sequence
    rows = torch.where(offs < lens[seq][:, None], starts[seq][:, None] + offs, B * T)
    pair_off = torch.cumsum(pos, 0) - pos
    pairs = int(pos.sum())
    return rows, pos.to(torch.int32), n[seq].to(torch.int32), pair_off, pairs


def _to_chunks(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...] -> [NC, BT, ...]`` (zero rows at padding; differentiable)."""
    flat = x.flatten(0, 1)
    flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
    return flat[rows]


def _local_factors(q, k, w, beta, groups: int):
    """Chunk-local tensors (chunk layout in, chunk layout out; float32): ``x0, a [NC, BT, HQ, *]`` and
    ``k_hat, W, U [NC, BT, H, K]``."""
    NC, C, H, K = k.shape
    HQ = q.shape[2]
    heads = lambda t: t.permute(0, 2, 1, *range(3, t.dim())).flatten(0, 1)  # [NC * h, BT, ...]  # noqa: E731
    W, U, TM, k_hat = (t[:, 0] for t in path_chunk_factors(heads(w), heads(beta), heads(k), C))  # [NC * H, BT, *]
    qh = heads(q).view(NC, H, groups, C, K)
    Wg, Ug, TMg, kg = (t.view(NC, H, 1, C, -1) for t in (W, U, TM, heads(k)))
    QW = torch.tril(qh @ Wg.transpose(-1, -2))  # [NC, H, groups, BT, BT]
    a = torch.tril(qh @ kg.transpose(-1, -2)) - QW @ TMg
    x0 = qh - QW @ Ug
    back = lambda t, h: t.reshape(NC, h, C, -1).transpose(1, 2)  # noqa: E731
    return back(x0, HQ), back(a, HQ), back(k_hat, H), back(W, H), back(U, H)


def _chunked_factors(q, k, w, beta, rows: torch.Tensor, groups: int):
    """:func:`_local_factors` of ``q, k, w, beta`` (token layout, any float dtype) in the chunk layout ``rows``,
    contiguous (the kernels' layout)."""
    factors = _local_factors(*(_to_chunks(t.float(), rows) for t in (q, k, w, beta)), groups)
    return tuple(t.contiguous() for t in factors)


def path_attn_chunked(q, k, v, w, beta, g, scale: float, cu_seqlens) -> torch.Tensor:
    """PaTH attention for training (checked inputs, ``scale`` given): ``o [B, T, HQ, V]`` in ``q.dtype``,
    differentiable in every input (:class:`PathInterChunkFunction`; the chunk layouts of ``v`` and the gate by
    autograd)."""
    B, T, HQ, _ = q.shape
    groups = HQ // k.shape[2]
    rows, pos, seq_chunks, pair_off, pairs = chunk_layout(B, T, cu_seqlens, q.device)
    G = None if g is None else _to_chunks(global_cumsum_torch(g.float(), cu_seqlens), rows)
    vc = _to_chunks(v, rows)
    oc = PathInterChunkFunction.apply(q, k, w, beta, rows, groups, vc, G, pos, seq_chunks, pair_off, pairs, scale)
    # back to tokens: row r of chunk n is flat position n * BT + r
    inv = torch.empty(B * T, dtype=torch.long, device=q.device)
    valid = rows.flatten() < B * T
    inv[rows.flatten()[valid]] = torch.arange(rows.numel(), device=q.device)[valid]
    return oc.flatten(0, 1)[inv].view(B, T, HQ, -1).to(q.dtype)


__all__ = ["PathInterChunkFunction", "chunk_layout", "path_attn_chunked"]
