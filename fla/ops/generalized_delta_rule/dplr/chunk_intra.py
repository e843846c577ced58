"""The DPLR chunk stages that need no carried state (maths in ``../README.md``), one program per chunk.

Per chunk of ``BT = 16`` tokens with ``G`` / ``Gx`` the chunk-local inclusive / exclusive cumsums of ``gk``:

* :func:`chunk_scores`: ``A_qk, A_qb`` (decay ``exp(G_i - G_j)``, ``j <= i``) and ``A_ak, A_ab``
  (``exp(Gx_i - G_j)``, ``j < i``), summed over key-channel blocks of ``BKC`` as ``[BT, BT, BKC]`` products:
  every exponent is a difference of cumsums masked to its causal part first, so no factor exceeds 1 whatever the
  decay;
* :func:`unit_lower_inverse`: ``Tm = (I - A_ab)^{-1}`` by block forward substitution (``[BT, BT]`` products);
* :func:`dplr_chunk_prep_kernel`: the chunk's affine maps of the state ``h`` before it (``w = a * exp(Gx)``)::

      u = W h + U0        W = Tm w,                 U0 = Tm A_ak v
      o = Qh h + O0       Qh = q exp(G) + A_qb W,   O0 = A_qk v + A_qb U0

  and the rows that carry the chunk into the state after it, ``Kd = k * exp(G_L - G)``, ``Bd = b * exp(G_L - G)``
  and ``EL = exp(G_L)`` (``G_L`` the last row of ``G``)::

      h' = EL * h + Kd^T v + Bd^T u

  so that the walk over the chunks (:mod:`.chunk_fwd`, and the state-gradient walk of :mod:`.chunk_bwd`) is only
  ``[BT, K] x [K, BV]`` products: the scores, the triangular solve, the score products and the decays run here,
  in parallel over every chunk of every sequence and head.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import chunk_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.utils import empty
from fla.utils.env import env_switch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2

DPLR_CHUNK = 16  # tokens per chunk of the Triton stages
DPLR_MAX_K = 256  # key (and value) head dim the kernels hold in one block
# a chunk whose decays add up to at most this (per key channel) forms its scores by tl.dot of rows scaled from the
# chunk's start: factors within [e^-60, e^60], far inside fp32's range with room for |q| |k| (chunk_scores)
SPAN_MAX = tl.constexpr(60.0)


def chunk_stage_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the chunk stages' products ``W, U0, Qh, O0, Kd, Bd`` in memory (every walk over the chunks reads
    them, each of its V-block programs ``W``, ``Qh``, ``Kd`` and ``Bd`` whole): bf16 for bf16 inputs (half their
    traffic, as fla 0.6.0 keeps its ``w, u``; the products are formed and used in float32 either way), float32
    otherwise or when the environment sets ``FLA_DPLR_BF16_STAGES=0``. bf16 made ``chunk_rwkv7`` fwd+bwd 8.253 ->
    7.740 ms at B=4, T=4096, H=16, K=V=128 on an H100, and the real-size GPU tests of ``tests/fla/ops/test_rwkv7.py``
    pass with it."""
    on = env_switch("FLA_DPLR_BF16_STAGES", default=True)
    return torch.bfloat16 if dtype == torch.bfloat16 and on else torch.float32


@triton.jit
def _pair_scores(x, y, Gr, Gc, m_pair):
    """``sum_c x_ic y_jc exp(Gr_ic - Gc_jc)`` ``[BT, BT]`` on the pairs ``m_pair`` (0 elsewhere)."""
    diff = Gr[:, None, :] - Gc[None, :, :]  # [BT, BT, BKC]
    decay = tl.exp(tl.where(m_pair[:, :, None], diff, float("-inf")))
    return tl.sum(x[:, None, :] * y[None, :, :] * decay, axis=2)


@triton.jit
def load_channel_block(q, k, a, b, gk, rows, m_t, o_c, scale, K: tl.constexpr):
    """Key channels ``o_c [BC]`` of a chunk's rows ``rows [BT]`` (valid ``m_t``): ``q * scale``, ``k``, ``a``,
    ``b`` as float32 ``[BT, BC]`` tiles, the chunk-local inclusive and exclusive cumsums ``G``, ``Gx`` of ``gk``,
    and the tiles' offsets and mask (0 outside it)."""
    p_c = rows[:, None] * K + o_c[None, :]  # [BT, BC]
    m_c = m_t[:, None] & (o_c < K)[None, :]
    c_q = tl.load(q + p_c, mask=m_c, other=0.0).to(tl.float32) * scale
    c_k = tl.load(k + p_c, mask=m_c, other=0.0).to(tl.float32)
    c_a = tl.load(a + p_c, mask=m_c, other=0.0).to(tl.float32)
    c_b = tl.load(b + p_c, mask=m_c, other=0.0).to(tl.float32)
    c_g = tl.load(gk + p_c, mask=m_c, other=0.0).to(tl.float32)
    c_G = tl.cumsum(c_g, axis=0)
    return c_q, c_k, c_a, c_b, c_G, c_G - c_g, p_c, m_c


@triton.jit
def chunk_decay_span(gk, rows, m_t, K: tl.constexpr, BKC: tl.constexpr):
    """The chunk's largest total log decay over the key channels, ``max_c -sum_i gk_ic`` (``>= 0``): every
    ``exp(+-G)`` inside the chunk lies in ``[exp(-span), exp(span)]``."""
    span = 0.0
    for i_kc in range(0, tl.cdiv(K, BKC)):
        o_kc = i_kc * BKC + tl.arange(0, BKC)
        m_c = m_t[:, None] & (o_kc < K)[None, :]
        c_g = tl.load(gk + rows[:, None] * K + o_kc[None, :], mask=m_c, other=0.0).to(tl.float32)
        span = tl.maximum(span, -tl.min(tl.sum(c_g, axis=0), axis=0))
    return span


@triton.jit
def chunk_scores(
    q,
    k,
    a,
    b,
    gk,
    rows,
    m_t,
    scale,
    K: tl.constexpr,
    BT: tl.constexpr,
    BKC: tl.constexpr,
    BKD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """The chunk's four gated scores ``(A_qk, A_qb, A_ak, A_ab)``, each ``[BT, BT]`` fp32 (``q`` scaled).

    ``rows [BT]``: the chunk's token-head rows of the ``[.., H, K]`` inputs; ``m_t [BT]``: rows inside the sequence.
    When the chunk's decay span is at most :data:`SPAN_MAX` (RWKV7's is at most ``16 * 0.607``) the scores are
    ``tl.dot`` products of rows scaled from the chunk's start, ``(q e^G)(k e^-G)^T`` etc., over key blocks of
    ``BKD``: each factor lies in ``[e^-60, e^60]`` and each product term is the term itself, so no precision is
    lost to the scaling. Otherwise (stronger decays) they are formed elementwise, ``sum_c x_ic y_jc
    exp(Gr_ic - Gc_jc)`` by ``[BT, BT, BKC]`` products with each exponent masked to its causal part before
    ``exp``: no factor exceeds 1 whatever the decay.
    """
    o_t = tl.arange(0, BT)
    m_incl = o_t[:, None] >= o_t[None, :]  # [BT, BT] j <= i
    m_strict = o_t[:, None] > o_t[None, :]  # [BT, BT] j < i
    A_qk = tl.zeros([BT, BT], dtype=tl.float32)
    A_qb = tl.zeros([BT, BT], dtype=tl.float32)
    A_ak = tl.zeros([BT, BT], dtype=tl.float32)
    A_ab = tl.zeros([BT, BT], dtype=tl.float32)
    if chunk_decay_span(gk, rows, m_t, K, BKC) <= SPAN_MAX:
        for i_kd in range(0, tl.cdiv(K, BKD)):
            o_kd = i_kd * BKD + tl.arange(0, BKD)  # [BKD]
            p_d = rows[:, None] * K + o_kd[None, :]  # [BT, BKD]
            m_d = m_t[:, None] & (o_kd < K)[None, :]
            d_g = tl.load(gk + p_d, mask=m_d, other=0.0).to(tl.float32)
            d_G = tl.cumsum(d_g, axis=0)  # [BT, BKD] inclusive
            d_inv = tl.exp(-d_G)
            d_qg = tl.load(q + p_d, mask=m_d, other=0.0).to(tl.float32) * (scale * tl.exp(d_G))
            d_ag = tl.load(a + p_d, mask=m_d, other=0.0).to(tl.float32) * tl.exp(d_G - d_g)
            d_kn = tl.trans(tl.load(k + p_d, mask=m_d, other=0.0).to(tl.float32) * d_inv)  # [BKD, BT]
            d_bn = tl.trans(tl.load(b + p_d, mask=m_d, other=0.0).to(tl.float32) * d_inv)
            A_qk += tl.dot(d_qg, d_kn, input_precision=DOT_PRECISION)
            A_qb += tl.dot(d_qg, d_bn, input_precision=DOT_PRECISION)
            A_ak += tl.dot(d_ag, d_kn, input_precision=DOT_PRECISION)
            A_ab += tl.dot(d_ag, d_bn, input_precision=DOT_PRECISION)
        A_qk = tl.where(m_incl, A_qk, 0.0)  # the acausal entries (large factors) never leave
        A_qb = tl.where(m_incl, A_qb, 0.0)
        A_ak = tl.where(m_strict, A_ak, 0.0)
        A_ab = tl.where(m_strict, A_ab, 0.0)
    else:
        for i_kc in range(0, tl.cdiv(K, BKC)):
            o_kc = i_kc * BKC + tl.arange(0, BKC)  # [BKC]
            c_q, c_k, c_a, c_b, c_G, c_Gx, _, _ = load_channel_block(q, k, a, b, gk, rows, m_t, o_kc, scale, K)
            A_qk += _pair_scores(c_q, c_k, c_G, c_G, m_incl)
            A_qb += _pair_scores(c_q, c_b, c_G, c_G, m_incl)
            A_ak += _pair_scores(c_a, c_k, c_Gx, c_G, m_strict)
            A_ab += _pair_scores(c_a, c_b, c_Gx, c_G, m_strict)
    return A_qk, A_qb, A_ak, A_ab


@triton.jit
def unit_lower_inverse(A, BT: tl.constexpr):
    """``(I - A)^{-1}`` ``[BT, BT]`` of a strictly lower-triangular ``A`` by block forward substitution over four
    diagonal blocks of ``BT / 4`` rows, every step one fp32 ``[BT, BT]`` product (``ieee`` multiplies) instead of
    a row's two cross-thread reductions: 7 steps in place of forward substitution's 15 dependent row steps.

    With ``A = A_d + A_o`` (``A_d`` its diagonal blocks, ``A_o`` the blocks below them):

    * ``D = (I - A_d)^{-1}`` by ``T <- I + A_d T`` from ``T = I``, ``BT / 4 - 1`` times: step ``n`` makes row
      ``n`` of every block final with the same products and sums as forward substitution (rows ``j < n`` are);
    * ``(I - A)^{-1} = (I - D A_o)^{-1} D`` by ``Y <- D + (D A_o) Y`` from ``Y = D``, 3 times: step ``n`` makes
      block row ``n`` final, block forward substitution (each block row ``sum_{J < I} Tm_II A_IJ Y_J``).
    """
    tl.static_assert(BT % 4 == 0, "four diagonal blocks")
    BS: tl.constexpr = BT // 4
    o_t = tl.arange(0, BT)
    eye = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
    same_block = o_t[:, None] // BS == o_t[None, :] // BS
    A_d = tl.where(same_block, A, 0.0)
    b_D = eye
    for _ in tl.static_range(BS - 1):
        b_D = eye + tl.dot(A_d, b_D, input_precision="ieee")
    b_X = tl.dot(b_D, tl.where(same_block, 0.0, A), input_precision="ieee")  # D A_o
    b_T = b_D
    for _ in tl.static_range(3):
        b_T = b_D + tl.dot(b_X, b_T, input_precision="ieee")
    return b_T


@triton.jit
def score_tiles(S, rows, m_t, BT: tl.constexpr):
    """Pointers and mask of a chunk's ``[BT, BT]`` tiles in the scores buffer ``S [B, T, H, 5, BT]`` (its rows
    ``rows``, valid ``m_t``): tile ``n`` (``A_qk, A_qb, A_ak, A_ab, Tm``) at ``p + n * BT``."""
    o_t = tl.arange(0, BT)
    return S + rows[:, None] * (5 * BT) + o_t[None, :], m_t[:, None] & m_t[None, :]


@triton.jit
def load_scores(S, rows, m_t, BT: tl.constexpr):
    """The chunk's ``(A_qk, A_qb, A_ak, A_ab, Tm)`` as :func:`dplr_chunk_prep_kernel` stored them (``Tm``'s rows
    past the sequence's end, not stored, are the identity's, as :func:`unit_lower_inverse` forms them)."""
    p, m = score_tiles(S, rows, m_t, BT)
    o_t = tl.arange(0, BT)
    b_T = tl.load(p + 4 * BT, mask=m, other=0.0)
    b_T += tl.where((o_t[:, None] == o_t[None, :]) & ~m_t[:, None], 1.0, 0.0)
    return (tl.load(p, mask=m, other=0.0), tl.load(p + BT, mask=m, other=0.0), tl.load(p + 2 * BT, mask=m, other=0.0),
            tl.load(p + 3 * BT, mask=m, other=0.0), b_T)  # fmt: skip


@lean_launch
@given_heuristics(STORE_O0="O0", STORE_S="S", IS_VARLEN="cu_seqlens")
# ~240 registers a thread at K = V = 128 whatever the warps (sm_90 SASS): 8 warps put twice the threads of a
# program on its chunk, 4 leave room for two programs an SM; it only writes, so the autotuner's reruns are harmless
@triton.autotune(
    configs=autotune_configs(warps=(4, 8), stages=(3,)),
    key=["H", "K", "V", "BK", "DOT_PRECISION", "STORE_O0", "STORE_S", "IS_VARLEN"],
)
@triton.jit(do_not_specialize=["T"])
def dplr_chunk_prep_kernel(
    q,
    k,
    v,
    a,
    b,
    gk,
    W,
    U0,
    Qh,
    O0,
    Kd,
    Bd,
    EL,
    S,
    cu_seqlens,
    chunk_indices,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BKC: tl.constexpr,
    BKD: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STORE_O0: tl.constexpr,
    STORE_S: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_bh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_n, i_tc, i_ch = chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, BT, IS_VARLEN)
    o_t, o_k = tl.arange(0, BT), tl.arange(0, BK)
    m_t = i_tc * BT + o_t < T_n  # [BT]
    rows = (bos + i_tc * BT + o_t) * H + i_h  # [BT] token-head rows
    A_qk, A_qb, A_ak, A_ab = chunk_scores(q, k, a, b, gk, rows, m_t, scale, K, BT, BKC, BKD, DOT_PRECISION)
    b_T = unit_lower_inverse(A_ab, BT)
    if STORE_S:  # for the backward's chunk pass, which would otherwise form them again
        p_s, m_s = score_tiles(S, rows, m_t, BT)
        tl.store(p_s, A_qk, mask=m_s)
        tl.store(p_s + BT, A_qb, mask=m_s)
        tl.store(p_s + 2 * BT, A_ak, mask=m_s)
        tl.store(p_s + 3 * BT, A_ab, mask=m_s)
        tl.store(p_s + 4 * BT, b_T, mask=m_s)
    p_x = rows[:, None] * K + o_k[None, :]  # [BT, BK]
    m_x = m_t[:, None] & (o_k < K)[None, :]
    b_q = tl.load(q + p_x, mask=m_x, other=0.0).to(tl.float32) * scale
    b_a = tl.load(a + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_g = tl.load(gk + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_G = tl.cumsum(b_g, axis=0)  # [BT, BK]
    b_GL = tl.sum(b_g, axis=0)  # [BK] rows past the sequence's end add 0
    b_W = tl.dot(b_T, b_a * tl.exp(b_G - b_g), input_precision=DOT_PRECISION)  # [BT, BK]
    b_Qh = b_q * tl.exp(b_G) + tl.dot(A_qb, b_W, input_precision=DOT_PRECISION)
    tl.store(W + p_x, b_W.to(W.dtype.element_ty), mask=m_x)
    tl.store(Qh + p_x, b_Qh.to(Qh.dtype.element_ty), mask=m_x)
    b_dec = tl.exp(b_GL[None, :] - b_G)  # [BT, BK] each <= 1
    b_k = tl.load(k + p_x, mask=m_x, other=0.0).to(tl.float32)
    b_b = tl.load(b + p_x, mask=m_x, other=0.0).to(tl.float32)
    tl.store(Kd + p_x, (b_k * b_dec).to(Kd.dtype.element_ty), mask=m_x)
    tl.store(Bd + p_x, (b_b * b_dec).to(Bd.dtype.element_ty), mask=m_x)
    tl.store(EL + (i_ch * H + i_h) * K + o_k, tl.exp(b_GL), mask=o_k < K)
    b_TA = tl.dot(b_T, A_ak, input_precision=DOT_PRECISION)  # [BT, BT]: U0 = (Tm A_ak) v
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        p_y = rows[:, None] * V + o_v[None, :]  # [BT, BV]
        m_y = m_t[:, None] & (o_v < V)[None, :]
        b_v = tl.load(v + p_y, mask=m_y, other=0.0).to(tl.float32)
        b_U0 = tl.dot(b_TA, b_v, input_precision=DOT_PRECISION)
        tl.store(U0 + p_y, b_U0.to(U0.dtype.element_ty), mask=m_y)
        if STORE_O0:
            b_O0 = tl.dot(A_qk, b_v, input_precision=DOT_PRECISION)
            b_O0 += tl.dot(A_qb, b_U0, input_precision=DOT_PRECISION)
            tl.store(O0 + p_y, b_O0.to(O0.dtype.element_ty), mask=m_y)


def score_block(K: int) -> int:
    """Key block of the scores' ``tl.dot`` path (:func:`chunk_scores`)."""
    return min(64, max(16, next_power_of_2(K)))


class DPLRStages(NamedTuple):
    """The chunk stages' products (:func:`chunk_dplr_prep`, module docstring), in :func:`chunk_stage_dtype` but
    ``EL``: ``W, Qh, Kd, Bd`` ``[B, T, H, K]``, ``U0, O0`` ``[B, T, H, V]`` (``O0`` ``None`` when not wanted) and
    ``EL`` ``[B, NT, H, K]`` float32 (``layout.states_shape(H, K, 1)[:-1]``), each chunk's ``exp(G_L)``."""

    W: torch.Tensor
    U0: torch.Tensor
    Qh: torch.Tensor
    O0: torch.Tensor | None
    Kd: torch.Tensor
    Bd: torch.Tensor
    EL: torch.Tensor


def chunk_dplr_prep(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    layout: ChunkLayout,
    want_o0: bool = True,
    scores: torch.Tensor | None = None,
) -> DPLRStages:
    """Launch :func:`dplr_chunk_prep_kernel` on contiguous inputs.

    Args:
        q, k, a, b, gk: ``[B, T, H, K]`` (``K <= 256``); v: ``[B, T, H, V]``;
        layout: chunks of :data:`DPLR_CHUNK`; want_o0: also form ``O0`` (only the output needs it: the
            backward's recomputation of the states does not).
        scores: ``[B, T, H, 5, BT]`` float32 to store the chunk's ``A_qk, A_qb, A_ak, A_ab`` and ``Tm`` in (row
            ``t`` of each ``[BT, BT]`` tile at token ``t``; :func:`load_scores`), or ``None``.
    Returns:
        :class:`DPLRStages`.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = chunk_stage_dtype(q.dtype)
    W, Qh, Kd, Bd = (empty(B, T, H, K, dtype=dtype, device=q.device) for _ in range(4))
    U0 = empty(B, T, H, V, dtype=dtype, device=q.device)
    O0 = empty(B, T, H, V, dtype=dtype, device=q.device) if want_o0 else None
    EL = empty(*layout.states_shape(H, K, 1)[:-1], dtype=torch.float32, device=q.device)
    grid = (layout.row_chunks, layout.batch * H)
    dplr_chunk_prep_kernel[grid](
        q, k, v, a, b, gk, W, U0, Qh, O0, Kd, Bd, EL, scores, layout.cu_seqlens, layout.chunk_indices, scale, T, H=H,
        K=K, V=V, BT=DPLR_CHUNK, BK=max(16, next_power_of_2(K)), BKC=16, BKD=score_block(K),
        BV=min(64, max(16, next_power_of_2(V))), DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return DPLRStages(W, U0, Qh, O0, Kd, Bd, EL)


__all__ = [
    "DPLR_CHUNK",
    "DPLR_MAX_K",
    "SPAN_MAX",
    "DPLRStages",
    "chunk_decay_span",
    "chunk_dplr_prep",
    "chunk_stage_dtype",
    "chunk_scores",
    "load_channel_block",
    "load_scores",
    "score_block",
    "score_tiles",
    "unit_lower_inverse",
]
