"""The delta-rule family token by token (delta rule, gated delta rule): the decoding path.

One program per (sequence, head, V block) keeps its ``[K, BV]`` state block in fp32 registers (the
delta rule's ``k^T S`` reduces over the whole key dim, and V columns are independent) and walks the
tokens::

    S <- exp(g_t) S;   u = beta_t (v_t - k_t^T S);   S <- S + k_t u^T;   o_t = scale * q_t^T S

(with a per-key-channel gate ``gk_t`` (KDA) the first step is ``S <- diag(exp(gk_t)) S``) or, with Comba's
erase keys ``p`` (the erase reads the state before the decay)::

    u = beta_t (v_t - p_t^T S);   S <- exp(g_t) S + k_t u^T;   o_t = scale * q_t^T S

The kernel takes ``p`` with either gate kind (``diag(exp(gk_t))`` for ``exp(g_t)``); the backward, the chunked
one, takes ``p`` with a scalar gate or none (``p`` with ``gk`` raises ``ValueError`` there).

Decoding (no gradient wanted) runs this kernel alone, with the L2 norm of q and k fused in. When
a gradient is wanted, the options are applied first (Triton L2 norm with its backward) and the
backward is the chunked Triton backward (:func:`fla.ops.common.chunk_delta.chunk_delta_rule_bwd`,
which redoes the WY solve): the same gradients as the chunked op, for any sequence length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.chunk import chunk_layout
from fla.ops.common.chunk_delta import chunk_delta_grads
from fla.ops.common.indexing import state_block, token_bounds
from fla.ops.common.inputs import expand_groups, prepare_delta_call, prepare_qk_beta
from fla.ops.common.l2norm import l2norm_triton
from fla.ops.common.recurrent_torch import recurrent_delta_torch
from fla.ops.common.tuning import given_heuristics
from fla.utils import IS_TRITON_INTERPRET, contiguous, empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2


def _state_block_configs() -> list[triton.Config]:
    """V block widths x warps for the recurrent kernel (one config under the interpreter)."""
    if IS_TRITON_INTERPRET:
        return [triton.Config({"BV": 32}, num_warps=4, num_stages=1)]
    return [triton.Config({"BV": bv}, num_warps=w) for bv in (16, 32, 64) for w in (2, 4, 8)]


def _fit_state_block(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The configs with ``BV`` at most V's power of two and ``BK * BV <= 8192`` (the fp32 state block lives in
    registers). It keeps configs of the list rather than making new ones: under torch.compile dynamo runs this
    function and needs each config it returns to be one it can name (a new ``triton.Config`` is "not a Python
    constant" to it, and the graph breaks)."""
    cap = min(max(16, next_power_of_2(kwargs["V"])), max(16, 8192 // kwargs["BK"]))
    return [c for c in configs if c.kwargs["BV"] <= cap]  # BV = 16 always fits: never empty


@lean_launch
@given_heuristics(USE_G="g", USE_GK="gk", HAS_P="p", USE_H0="h0", STORE_HT="ht", IS_VARLEN="cu_seqlens")
@triton.autotune(
    configs=_state_block_configs(),
    key=["H", "K", "V", "BK", "USE_QK_L2NORM", "USE_G", "USE_GK", "HAS_P", "USE_H0", "STORE_HT", "IS_VARLEN"],
    prune_configs_by={"early_config_prune": _fit_state_block},
)
@triton.jit(do_not_specialize=["T"])
def fused_recurrent_delta_rule_fwd_kernel(
    q,
    k,
    v,
    beta,
    g,
    gk,
    p,
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
    USE_QK_L2NORM: tl.constexpr,
    NEG_EIGVAL: tl.constexpr,
    USE_G: tl.constexpr,
    USE_GK: tl.constexpr,
    HAS_P: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
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
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_beta = tl.load(beta + i_tok).to(tl.float32)
        if USE_QK_L2NORM:
            b_q = b_q / tl.sqrt(tl.sum(b_q * b_q) + 1e-6)
            b_k = b_k / tl.sqrt(tl.sum(b_k * b_k) + 1e-6)
        if NEG_EIGVAL:
            b_beta = b_beta * 2.0
        if HAS_P:  # Comba: the erase key p reads the state before the decay
            b_p = tl.load(p + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
            if USE_QK_L2NORM:
                b_p = b_p / tl.sqrt(tl.sum(b_p * b_p) + 1e-6)
            b_u = b_beta * (b_v - tl.sum(b_h * b_p[:, None], axis=0))  # [BV] the new value
            if USE_G:
                b_h *= tl.exp(tl.load(g + i_tok).to(tl.float32))
            if USE_GK:  # the decay per key row of the state
                b_h *= tl.exp(tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32))[:, None]
        else:
            if USE_G:
                b_h *= tl.exp(tl.load(g + i_tok).to(tl.float32))
            if USE_GK:  # the decay per key row of the state
                b_h *= tl.exp(tl.load(gk + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32))[:, None]
            b_u = b_beta * (b_v - tl.sum(b_h * b_k[:, None], axis=0))  # [BV] the new value
        b_h += b_k[:, None] * b_u[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0) * scale  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + i_nh * K * V + o_kv, b_h, mask=m_kv)


@contiguous
def fused_recurrent_delta_rule_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
    *,
    gk: torch.Tensor | None = None,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the recurrent kernel (inputs made contiguous).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta, g: ``[B, T, H]`` (g optional); gk:
        ``[B, T, H, K]`` per-key-channel log gates (instead of ``g``) or ``None``;
        initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``); p: ``[B, T, H, K]`` Comba's
        erase keys or ``None`` (L2-normalized with q and k under ``use_qk_l2norm_in_kernel``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = max(16, next_power_of_2(K))
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = empty(N, H, K, V, dtype=torch.float32, device=v.device) if output_final_state else None
    # the V block width is autotuned: decoding is bound by reading and writing the fp32 state
    fused_recurrent_delta_rule_fwd_kernel[lambda meta: (cdiv(V, meta["BV"]), N * H)](
        q, k, v, beta, g, gk, p, initial_state, o, ht, cu_seqlens, scale, T, H=H, K=K, V=V, BK=BK,
        USE_QK_L2NORM=use_qk_l2norm_in_kernel, NEG_EIGVAL=allow_neg_eigval,
    )  # fmt: skip
    return o, ht


class FusedRecurrentDeltaRuleFunction(torch.autograd.Function):
    """The recurrent kernel forward (options already applied) with the chunked Triton backward."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, gk=None):
        o, ht = fused_recurrent_delta_rule_fwd(
            q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, False, False, gk=gk
        )
        ctx.save_for_backward(q, k, v, beta, g, initial_state, cu_seqlens, gk)
        ctx.scale = scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, beta, g, initial_state, cu_seqlens, gk = ctx.saved_tensors
        layout = chunk_layout(q, cu_seqlens)
        return chunk_delta_grads(ctx, q, k, v, beta, g, None, None, initial_state, do, dht, layout, gk=gk)


def fused_recurrent_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
    gk: torch.Tensor | None = None,
    gk_name: str = "gk",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of the public ``fused_recurrent_(gated_)delta_rule`` / ``fused_recurrent_kda`` ops (``g``
    ``[B, T, H]``, ``gk`` ``[B, T, H, K]`` (public name ``gk_name``) or neither): check the inputs, then the
    recurrent kernel or :func:`fla.ops.common.recurrent_torch.recurrent_delta_torch`."""
    beta, scale = prepare_delta_call(q, k, v, beta, g, scale, initial_state, cu_seqlens, gk=gk, gk_name=gk_name)
    args = (q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)
    return dispatch(
        (q, k, v, beta, g, gk, initial_state), _recurrent_delta_torch, _fused_recurrent_delta_triton, *args,
        use_qk_l2norm_in_kernel, allow_neg_eigval, gk,
    )  # fmt: skip


def _recurrent_delta_torch(q, k, v, *rest) -> tuple[torch.Tensor, torch.Tensor | None]:
    o, ht = recurrent_delta_torch(q, k, v, *rest)
    return o.to(v.dtype), ht


def _fused_recurrent_delta_triton(
    q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel, allow_neg_eigval,
    gk=None,
):  # fmt: skip
    args = (scale, initial_state, output_final_state, cu_seqlens)
    wants_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, beta, g, gk, initial_state)
    )
    if not wants_grad:  # decoding: one kernel, L2 norm and beta scaling fused in
        q, k = expand_groups(q, k, v)
        return fused_recurrent_delta_rule_fwd(
            q, k, v, beta, g, *args, use_qk_l2norm_in_kernel, allow_neg_eigval, gk=gk
        )  # fmt: skip
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval, norm=l2norm_triton)
    q, k = expand_groups(q, k, v)
    return FusedRecurrentDeltaRuleFunction.apply(q, k, v, beta, g, *args, gk)
