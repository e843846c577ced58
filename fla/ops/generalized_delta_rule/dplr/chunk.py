"""``chunk_dplr_delta_rule``: the DPLR delta rule in chunked form (training, prefill).

CUDA: the Triton forward (:mod:`.chunk_fwd`) and backward (:mod:`.chunk_bwd`; the recomputed PyTorch chunked
form for head dims past 128, :mod:`.backward`). CPU / float64: the PyTorch chunked form
(:func:`.naive.naive_chunk_dplr_delta_rule`).
"""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.backward import dplr_grads, has_triton_backward
from fla.ops.generalized_delta_rule.dplr.chunk_bwd import DPLRForwardState, dplr_forward_for_backward
from fla.ops.generalized_delta_rule.dplr.chunk_fwd import DPLR_MAX_K, chunk_dplr_fwd
from fla.ops.generalized_delta_rule.dplr.inputs import prepare_dplr_call
from fla.ops.generalized_delta_rule.dplr.naive import naive_chunk_dplr_delta_rule
from fla.utils import contiguous
from fla.utils.backend import dispatch

FLA_OPTIONS = ("cu_seqlens_cpu", "safe_gate", "chunk_size", "disable_recompute", "lower_bound")


class ChunkDPLRDeltaRuleFunction(torch.autograd.Function):
    """Triton chunk forward and backward; gradients to ``q, k, v, a, b, gk`` and the initial state (see
    :mod:`.backward`). ``keep``: the forward keeps the per-chunk states and the chunk stages' products for the
    backward (fla 0.6.0's ``disable_recompute=True``; ~3.1 KB per token and head at K = V = 128 in bf16) instead of
    the backward recomputing them (the chunk stages and the state walk: a second forward)."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens, keep=False):
        keep = keep and any(ctx.needs_input_grad) and has_triton_backward(q, v)
        if keep:
            args = (q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens, True)
            o, ht, kept = dplr_forward_for_backward(*args)
            ctx.layout = kept.layout
            ctx.save_for_backward(q, k, v, a, b, gk, initial_state, cu_seqlens, *kept[1:])
        else:
            o, ht, _, _ = chunk_dplr_fwd(q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens)
            ctx.save_for_backward(q, k, v, a, b, gk, initial_state, cu_seqlens)
        ctx.keep, ctx.scale = keep, scale
        return o, ht

    @staticmethod
    @contiguous
    def backward(ctx, do, dht):
        q, k, v, a, b, gk, initial_state, cu_seqlens, *kept = ctx.saved_tensors
        kept = DPLRForwardState(ctx.layout, *kept) if ctx.keep else None
        wants = ctx.needs_input_grad
        inputs = (q, k, v, a, b, gk)
        grads, dh0 = dplr_grads(inputs, wants[:6], ctx.scale, initial_state, wants[7], cu_seqlens, do, dht, kept)
        return (*grads, None, dh0, None, None, None)


def check_dplr_options(op: str, q: torch.Tensor, kwargs: dict) -> None:
    """fla 0.6.0's tuning keywords (``FLA_OPTIONS``) are accepted (this pipeline has one scheme), ``cp_context``
    only as ``None``; ``head_first`` and unknown keywords raise; a key dim past what the kernels hold raises
    ``ValueError``."""
    if "head_first" in kwargs:
        raise ValueError(f"{op}: head_first was removed; inputs are [B, T, H, ...]")
    if kwargs.pop("cp_context", None) is not None:
        raise NotImplementedError(f"{op}: context parallelism (cp_context) is not supported")
    lower_bound = kwargs.get("lower_bound")
    if lower_bound is not None and lower_bound >= 0:
        raise ValueError(f"{op}: lower_bound must be negative (gk is a log decay < 0), got {lower_bound}")
    unknown = sorted(set(kwargs) - set(FLA_OPTIONS))
    if unknown:
        raise TypeError(f"{op}: unexpected keyword arguments {unknown}")
    if q.shape[-1] > DPLR_MAX_K:
        raise ValueError(f"{op}: key head dim K={q.shape[-1]} is larger than {DPLR_MAX_K}")


def dispatch_chunk_dplr(inputs: tuple, args: tuple, disable_recompute: bool = False):
    """Run the chunked op with ``args`` (:class:`ChunkDPLRDeltaRuleFunction`'s, without ``keep``) on the backend
    :func:`fla.utils.backend.dispatch` picks for ``inputs``. ``disable_recompute`` (fla 0.6.0's keyword): the Triton
    forward keeps what its backward reads instead of the backward recomputing it (more memory, no second forward);
    the PyTorch form keeps autograd's own tensors either way."""

    def triton_chunk(*a):
        return ChunkDPLRDeltaRuleFunction.apply(*a, bool(disable_recompute))

    return dispatch(inputs, naive_chunk_dplr_delta_rule, triton_chunk, *args)


def chunk_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DPLR delta rule, chunked: ``S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``,
    ``o_t = scale * S_t^T q_t`` (per head, ``S [K, V]``).

    Args:
        q, k: ``[B, T, H, K]`` queries and keys; v: ``[B, T, H, V]``.
        a, b: ``[B, T, H, K]`` the rank-one part of each token's transition (RWKV7: ``a = -kk``, ``b = kk * a``).
        gk: ``[B, T, H, K]`` log decays (``<= 0``).
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
        kwargs: fla 0.6.0's ``disable_recompute`` (``True``: the forward keeps the per-chunk states and the chunk
            stages' products for the backward, ~3.1 KB per token and head at K = V = 128 in bf16, instead of the
            backward running the forward's stages again), ``cu_seqlens_cpu``, ``safe_gate``, ``chunk_size``,
            ``lower_bound`` (accepted; a non-negative ``lower_bound`` raises), ``cp_context`` (only ``None``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    check_dplr_options("chunk_dplr_delta_rule", q, kwargs)
    scale = prepare_dplr_call(q, k, v, a, b, gk, scale, initial_state, cu_seqlens)
    args = (q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens)
    inputs = (q, k, v, a, b, gk, initial_state)
    return dispatch_chunk_dplr(inputs, args, kwargs.get("disable_recompute", False))


__all__ = ["ChunkDPLRDeltaRuleFunction", "chunk_dplr_delta_rule", "dispatch_chunk_dplr"]
