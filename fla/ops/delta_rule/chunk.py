"""Chunked delta rule (DeltaNet): the training path (the shared pipeline of :mod:`fla.ops.common.chunk_delta`,
no gate)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk_delta import chunk_delta
from fla.ops.common.fla_options import accepts_fla_state_options


@accepts_fla_state_options()
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
            Grouped value heads: v ``[B, T, HV, V]``, beta ``[B, T, HV]`` and states ``[N, HV, K, V]``
            with ``HV`` a multiple of ``H`` (value head ``j`` reads q/k head ``j // (HV / H)``).
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
