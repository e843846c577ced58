"""Chunked delta rule (DeltaNet): the training path.

Triton forward (each stage its own kernel): gate cumsum (:mod:`fla.ops.common.cumsum`), WY solve
(:mod:`.wy`), state recurrence with the new values (:mod:`.chunk_h`), output
(:func:`fla.ops.common.chunk_o.chunk_fwd_o` on ``v_new``). The backward recomputes the chunked
PyTorch form (:mod:`.function`) until the Triton backward stages exist.
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk import chunk_layout
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.delta_rule.chunk_h import chunk_delta_fwd_h
from fla.ops.delta_rule.function import DeltaRuleFunction
from fla.ops.delta_rule.inputs import prepare_delta_call, prepare_qk_beta
from fla.ops.delta_rule.naive import chunk_delta_rule_torch
from fla.ops.delta_rule.wy import chunk_delta_wy_fwd


def chunk_delta_rule_fwd(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton forward (contiguous inputs; shapes as :func:`chunk_delta_rule`, ``g`` ``[B, T, H]`` or ``None``).

    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state ``[N, H, K, V]`` float32 or ``None``.
    """
    q, k, beta = (x.contiguous() for x in prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval))
    layout = chunk_layout(q, cu_seqlens)
    G = None if g is None else chunk_local_cumsum(g, layout)
    _, w, u = chunk_delta_wy_fwd(k, v, beta, G, layout)
    h, v_new, ht = chunk_delta_fwd_h(k, w, u, layout, G, initial_state, output_final_state)
    return chunk_fwd_o(q, k, v_new, h, layout, scale, g=G), ht


def chunk_delta(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The body of both ``chunk_(gated_)delta_rule`` ops (``g`` ``[B, T, H]`` or ``None``)."""
    beta, scale, backend = prepare_delta_call(q, k, v, beta, g, scale, initial_state, cu_seqlens)
    args = (q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)
    if backend == "torch":
        return chunk_delta_rule_torch(*args, use_qk_l2norm_in_kernel, allow_neg_eigval)
    return DeltaRuleFunction.apply(chunk_delta_rule_fwd, *args, use_qk_l2norm_in_kernel, allow_neg_eigval)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule, chunked: ``S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T``, ``o_t = scale q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` in ``(0, 1)`` (``None``: ones).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (float32 recommended).
        output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
        use_qk_l2norm_in_kernel: L2-normalize q and k inside (with its backward); keys should be
            unit-norm for the recurrence to be stable, so pass normalized keys or set this.
        allow_neg_eigval: use ``2 * beta`` (in ``(0, 2)``), so ``I - beta k k^T`` may have a
            negative eigenvalue.
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    return chunk_delta(
        q, k, v, beta, None, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel,
        allow_neg_eigval,
    )  # fmt: skip
