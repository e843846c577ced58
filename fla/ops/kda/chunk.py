"""Chunked KDA (Kimi Delta Attention): the training path (the shared delta stages with a per-key-channel gate)."""

from __future__ import annotations

import torch

from fla.ops.common.chunk_delta import chunk_delta
from fla.ops.kda.gate import check_kda_inputs, prepare_kda_gates, state_from_kv, state_to_kv


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    safe_gate: bool = False,
    lower_bound: float | None = None,
    disable_recompute: bool = False,
    return_intermediate_states: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    cp_context=None,
    use_graph: bool = False,
    max_num_seqs: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KDA, chunked: per value head, with ``S`` ``[K, V]``::

        S' = diag(exp(g_t)) S_{t-1};   S_t = S' + beta_t k_t (v_t - k_t^T S')^T;   o_t = scale * q_t^T S_t

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value heads);
        g: ``[B, T, HV, K]`` log decays (``<= 0``), or the raw gate when ``use_gate_in_kernel`` (then
            ``A_log`` ``[HV]`` and ``dt_bias`` ``[HV * K]`` come as keywords, see :mod:`fla.ops.kda.gate`);
        beta: ``[B, T, HV]`` in ``(0, 1)``, or logits when ``use_beta_sigmoid_in_kernel``;
        scale: default ``K ** -0.5``; initial_state: ``[N, HV, K, V]`` (``[N, HV, V, K]`` when
        ``state_v_first``); output_final_state: also return the final state (float32, same layout);
        use_qk_l2norm_in_kernel: L2-normalize q and k; allow_neg_eigval: ``beta = 2 sigmoid(logits)``
        (needs ``use_beta_sigmoid_in_kernel``); lower_bound: the sigmoid gate form, bounded below;
        safe_gate: fla's fast-kernel switch (here only its check: ``lower_bound`` in ``[-5, 0)`` with the
        gate in the op); cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
        ``disable_recompute``, ``cu_seqlens_cpu`` and ``chunk_size`` (32 or 64) are accepted for fla
        compatibility: they change speed / memory in fla, not results, and this pipeline's chunking is fixed.
        Context parallelism (``cp_context``), graph capture (``use_graph``) and ``return_intermediate_states``
        are not supported (``NotImplementedError``).
    Returns:
        ``o`` ``[B, T, HV, V]`` (``v.dtype``) and the final state or ``None``.
    """
    if cp_context is not None or use_graph or return_intermediate_states:
        raise NotImplementedError("chunk_kda: cp_context, use_graph and return_intermediate_states are not supported")
    chunk_size = kwargs.pop("chunk_size", 64)
    if chunk_size not in (32, 64):
        raise ValueError(f"chunk_size must be 32 or 64 for KDA, got {chunk_size}")
    A_log, dt_bias = kwargs.pop("A_log", None), kwargs.pop("dt_bias", None)
    if kwargs:
        raise TypeError(f"chunk_kda got unexpected keyword arguments {sorted(kwargs)}")
    check_kda_inputs(
        q, v, g, A_log, dt_bias, use_gate_in_kernel, use_beta_sigmoid_in_kernel, allow_neg_eigval, lower_bound
    )
    if safe_gate and use_gate_in_kernel and (lower_bound is None or not -5 <= lower_bound < 0):
        raise ValueError(f"safe_gate=True with the gate in the op needs lower_bound in [-5, 0), got {lower_bound}")
    g, beta = prepare_kda_gates(
        g, beta, A_log if use_gate_in_kernel else None, dt_bias, use_gate_in_kernel, use_beta_sigmoid_in_kernel,
        lower_bound,
    )  # fmt: skip
    o, ht = chunk_delta(
        q, k, v, beta, None, scale, state_to_kv(initial_state, state_v_first), output_final_state, cu_seqlens,
        use_qk_l2norm_in_kernel, allow_neg_eigval, gk=g, gk_name="g",
    )  # fmt: skip
    return o, state_from_kv(ht, state_v_first)
