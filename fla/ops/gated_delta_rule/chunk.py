"""Chunked gated delta rule (Gated DeltaNet): the training path."""

from __future__ import annotations

import torch

from fla.ops.common.chunk_delta import chunk_delta
from fla.ops.common.fla_options import accepts_fla_state_options, sigmoid_beta


@accepts_fla_state_options(delta=True)
def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule, chunked: with ``S' = exp(g_t) S_{t-1}``,
    ``S_t = S' - beta_t k_t (k_t^T S') + beta_t k_t v_t^T`` and ``o_t = scale q_t^T S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` log decays (``<= 0``);
        beta: ``[B, T, H]`` in ``(0, 1)`` (``None``: ones); scale: default ``K ** -0.5``;
        initial_state: ``[N, H, K, V]`` (float32 recommended); output_final_state: also return
        the final state ``[N, H, K, V]`` float32; cu_seqlens: ``[N+1]`` packed bounds (``B == 1``);
        use_qk_l2norm_in_kernel, allow_neg_eigval: as :func:`fla.ops.delta_rule.chunk_delta_rule`;
        use_beta_sigmoid_in_kernel: ``beta`` holds logits, ``sigmoid(beta)`` is used (fla's option; with
        ``allow_neg_eigval``, ``2 sigmoid(beta)``). fla's ``state_v_first``, ``cu_seqlens_cpu``, ``chunk_indices``
        and ``cp_context`` keywords: :mod:`fla.ops.common.fla_options`.
        Grouped value heads: v ``[B, T, HV, V]``, g and beta ``[B, T, HV]``, states ``[N, HV, K, V]``
        (``HV`` a multiple of ``H``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    beta = sigmoid_beta(beta, use_beta_sigmoid_in_kernel)
    return chunk_delta(
        q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm_in_kernel,
        allow_neg_eigval,
    )  # fmt: skip
