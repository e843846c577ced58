"""Triton forward of the chunked DPLR delta rule: the chunk stages (:mod:`.chunk_intra`, parallel over chunks),
then one program per (sequence, head, V block) walks its chunks with the state ``h [K, BV]`` in registers.

Per chunk of ``BT = 16`` tokens (maths in ``../README.md``), from the chunk stages' ``W, U0, Qh, O0`` and the
decayed rows ``Kd = k * exp(G_L - G)``, ``Bd = b * exp(G_L - G)``, ``EL = exp(G_L)`` (``G`` the chunk-local cumsum
of ``gk``, ``G_L`` its last row; :class:`.chunk_intra.DPLRStages`)::

    u = W h + U0,   o = Qh h + O0,   h <- EL * h + Kd^T v + Bd^T u

Varlen needs no chunk indices in the walk: each program knows its sequence's bounds and walks its chunks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import sequence_bounds, state_block, token_bounds
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import dot_precision, given_heuristics
from fla.ops.generalized_delta_rule.dplr.chunk_intra import DPLR_CHUNK, DPLR_MAX_K, DPLRStages, chunk_dplr_prep
from fla.utils import IS_TRITON_INTERPRET, empty
from fla.utils.env import env_switch
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


def walk_bf16_dots(dtype: torch.dtype) -> bool:
    """Whether the chunk walks (forward and state gradient) multiply in bf16 (:func:`walk_operand`): for bf16 inputs,
    as fla 0.6.0's walks do, unless the environment sets ``FLA_DPLR_BF16_WALKS=0`` (TF32 products of float32
    operands). ``chunk_rwkv7`` fwd+bwd at B=4, T=4096, H=16, K=V=128 on an H100: 6.837 ms with TF32 walks, 5.964 ms
    with bf16 ones (fla 0.6.0: 7.903); on sm_90 the state-gradient walk's loop goes from 485 to 223 instructions,
    the forward walk's from 727 to 319 (K=V=128, BV=16, 4 warps: ``scripts/sass_stats.py``, triton 3.9)."""
    on = env_switch("FLA_DPLR_BF16_WALKS", default=True)
    return dtype == torch.bfloat16 and on


@triton.jit
def walk_operand(x, BF16_DOTS: tl.constexpr):
    """``x`` (as loaded or formed) as an operand of a walk's ``tl.dot``: bf16 with ``BF16_DOTS`` (a bf16 MMA step
    takes k = 16 against TF32's 8: half the steps on the serial chain from one chunk's state to the next), else
    float32. The products accumulate in float32 either way."""
    if BF16_DOTS:
        return x.to(tl.bfloat16)
    return x.to(tl.float32)


def chunk_state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the backward keeps the per-chunk states ``h`` and their gradients ``dh`` in (``[B, NT, H, K, V]``,
    chunks of 16: 2 GB each in fp32 at B=4, T=4096, H=16, K=V=128): bf16 for bf16 inputs (as fla 0.6.0 keeps them),
    float32 otherwise (fp16's range is too small for a state)."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def walk_configs(warps: tuple[int, ...] = (2, 4)) -> list[triton.Config]:
    """V block widths 16 / 32 x ``warps`` of the kernels that go over the values in ``BV`` blocks (one config under
    the interpreter): the chunk walks (forward and state gradient) and the backward's local kernel. Narrower blocks
    put more programs on a serial walk over the chunks, wider ones fewer, each with more work per step: which wins
    depends on the batch x heads at hand and the GPU, hence autotuned. Pruned by :func:`fit_walk_block`."""
    if IS_TRITON_INTERPRET:
        return [triton.Config({"BV": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BV": bv}, num_warps=w) for bv in (16, 32) for w in warps]


def fit_walk_block(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The configs with ``BV`` at most V's power of two and ``BK * BV <= 4096`` (the fp32 state block lives in
    registers); ``BV = 16`` always fits: never empty. Configs of the list, not new ones (dynamo must name each)."""
    cap = min(max(16, next_power_of_2(kwargs["V"])), max(16, 4096 // kwargs["BK"]))
    return [c for c in configs if c.kwargs["BV"] <= cap]


@lean_launch
@given_heuristics(USE_H0="h0", STORE_HT="ht", STORE_HS="hs", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=walk_configs(),
    key=["H", "K", "V", "BK", "DOT_PRECISION", "BF16_DOTS", "STORE_O", "USE_H0", "STORE_HT", "STORE_HS", "IS_VARLEN"],
    prune_configs_by={"early_config_prune": fit_walk_block},
)
@triton.jit(do_not_specialize=["T"])
def dplr_chunk_fwd_kernel(
    v,
    W,
    U0,
    Qh,
    O0,
    Kd,
    Bd,
    EL,
    h0,
    o,
    ht,
    hs,
    cu_seqlens,
    chunk_offsets,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BF16_DOTS: tl.constexpr,
    STORE_O: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    STORE_HS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n, NT_n, boh = sequence_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim
    o_t = tl.arange(0, BT)

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_c in range(0, NT_n):
        if STORE_HS:  # the state before each chunk, for the backward: [.., chunk, H, K, V]
            tl.store(hs + ((boh + i_c) * H + i_h) * K * V + o_kv, b_h.to(hs.dtype.element_ty), mask=m_kv)
        m_t = i_c * BT + o_t < T_n  # [BT]
        rows = (bos + i_c * BT + o_t) * H + i_h  # [BT] token-head rows
        p_x = rows[:, None] * K + o_k[None, :]  # [BT, BK]
        m_x = m_t[:, None] & m_k[None, :]
        p_y = rows[:, None] * V + o_v[None, :]  # [BT, BV]
        m_y = m_t[:, None] & m_v[None, :]
        b_hd = walk_operand(b_h, BF16_DOTS)  # [BK, BV]
        b_W = walk_operand(tl.load(W + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_u = tl.dot(b_W, b_hd, input_precision=DOT_PRECISION) + tl.load(U0 + p_y, mask=m_y, other=0.0).to(tl.float32)
        if STORE_O:
            b_Qh = walk_operand(tl.load(Qh + p_x, mask=m_x, other=0.0), BF16_DOTS)
            b_o = tl.dot(b_Qh, b_hd, input_precision=DOT_PRECISION)
            b_o += tl.load(O0 + p_y, mask=m_y, other=0.0).to(tl.float32)
            tl.store(o + p_y, b_o.to(o.dtype.element_ty), mask=m_y)
        b_eL = tl.load(EL + ((boh + i_c) * H + i_h) * K + o_k, mask=m_k, other=0.0)  # [BK]
        b_Kd = walk_operand(tl.load(Kd + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_Bd = walk_operand(tl.load(Bd + p_x, mask=m_x, other=0.0), BF16_DOTS)
        b_v = walk_operand(tl.load(v + p_y, mask=m_y, other=0.0), BF16_DOTS)
        b_h *= b_eL[:, None]
        b_h += tl.dot(tl.trans(b_Kd), b_v, input_precision=DOT_PRECISION)
        b_h += tl.dot(tl.trans(b_Bd), walk_operand(b_u, BF16_DOTS), input_precision=DOT_PRECISION)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def chunk_dplr_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    layout: ChunkLayout | None = None,
    want_o: bool = True,
    scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, DPLRStages]:
    """The chunk stages, then :func:`dplr_chunk_fwd_kernel`, on contiguous inputs.

    Args:
        q, k, a, b, gk: ``[B, T, H, K]`` (``K <= 256``); v: ``[B, T, H, V]``; initial_state: ``[N, H, K, V]``;
        cu_seqlens: ``[N+1]`` (``B == 1``).
        layout: the chunk layout (chunks of :data:`DPLR_CHUNK`) when the per-chunk states are wanted.
        want_o: form and store ``o`` (the backward's recomputation wants only the states).
        scores: a ``[B, T, H, 5, DPLR_CHUNK]`` float32 buffer for the chunk stages' scores and ``Tm``
            (:func:`.chunk_intra.chunk_dplr_prep`), or ``None``.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) or ``None``, the final state ``[N, H, K, V]`` float32 or ``None``,
        with ``layout`` the state before every chunk (``layout.states_shape``, :func:`chunk_state_dtype`) else
        ``None``, and the chunk stages (:class:`.chunk_intra.DPLRStages`, ``O0`` ``None`` without ``want_o``).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    want_hs = layout is not None
    layout = layout if layout is not None else ChunkLayout.build(q, cu_seqlens, DPLR_CHUNK)
    stages = chunk_dplr_prep(q, k, v, a, b, gk, scale, layout, want_o0=want_o, scores=scores)
    BK = max(16, next_power_of_2(K))
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device) if want_o else None
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    hs = empty(*layout.states_shape(H, K, V), dtype=chunk_state_dtype(q.dtype), device=v.device) if want_hs else None
    # V blocks (walk_configs): programs walking in parallel, each with a [BK, BV] state
    dplr_chunk_fwd_kernel[lambda meta: (cdiv(V, meta["BV"]), N * H)](
        v, *stages, initial_state, o, ht, hs, cu_seqlens, layout.chunk_offsets, T, H=H, K=K, V=V,
        BT=DPLR_CHUNK, BK=BK, DOT_PRECISION=dot_precision(q.dtype), BF16_DOTS=walk_bf16_dots(q.dtype),
        STORE_O=want_o,
    )  # fmt: skip
    return o, ht, hs, stages


@lean_launch
@given_heuristics(USE_H0="h0", STORE_HT="ht", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def dplr_fused_recurrent_fwd_kernel(
    q,
    k,
    v,
    a,
    b,
    gk,
    h0,
    o,
    ht,
    cu_seqlens,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Token by token: ``S <- exp(gk_t)[:, None] * S + b_t (a_t^T S) + k_t v_t^T``, ``o_t = scale * S^T q_t``."""
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_k, o_v, m_k, m_v, o_kv, m_kv = state_block(0, i_v, K, V, BK, BV)  # the whole key dim

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for t in range(0, T_n):
        i_tok = (bos + t) * H + i_h  # token-head row
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_a = tl.load(a + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_b = tl.load(b + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_g = tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_erased = tl.sum(b_a[:, None] * b_h, axis=0)  # [BV] a_t^T S_{t-1}
        b_h = tl.exp(b_g)[:, None] * b_h + b_b[:, None] * b_erased[None, :] + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0)  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


def fused_recurrent_dplr_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch :func:`dplr_fused_recurrent_fwd_kernel`; same arguments and returns as :func:`chunk_dplr_fwd`."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = max(16, next_power_of_2(K))
    BV = min(max(16, next_power_of_2(V)), max(16, 4096 // BK))
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    grid = (cdiv(V, BV), N * H)
    dplr_fused_recurrent_fwd_kernel[grid](
        q, k, v, a, b, gk, initial_state, o, ht, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK, BV=BV
    )
    return o, ht


__all__ = ["DPLR_CHUNK", "DPLR_MAX_K", "chunk_dplr_fwd", "fused_recurrent_dplr_fwd"]
