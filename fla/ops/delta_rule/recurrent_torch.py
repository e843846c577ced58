"""The token-by-token delta rule in plain PyTorch (the reference of the plain and gated families).

Per head, with ``S`` ``[K, V]`` and (gated only) a scalar log decay ``g_t``::

    S'_{t-1} = exp(g_t) S_{t-1}
    S_t      = S'_{t-1} - beta_t k_t (k_t^T S'_{t-1}) + beta_t k_t v_t^T
    o_t      = scale * q_t^T S_t
"""

from __future__ import annotations

import torch

from fla.ops.delta_rule.inputs import expand_groups, prepare_qk_beta
from fla.ops.utils.varlen import per_sequence


def _recurrence(q, k, v, beta, g, h0, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dtype)
    outs = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t].to(dtype).exp()[..., None, None]
        k_t = k[:, t]  # [B, H, K]
        # the delta rule: replace the value S stores under k_t by beta-mix of old and new
        u_t = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))  # [B, H, V]
        S = S + k_t[..., :, None] * u_t[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, V)
    return o, S


def recurrent_delta_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the (gated) delta rule over every token (float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value heads);
            beta: ``[B, T, HV]``; g: ``[B, T, HV]`` log decays or ``None``; initial_state:
            ``[N, HV, K, V]``; cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``);
            use_qk_l2norm_in_kernel / allow_neg_eigval: see :func:`fla.ops.delta_rule.inputs.prepare_qk_beta`.
    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, HV, K, V]`` when ``output_final_state``.
    """
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval)
    q, k = expand_groups(q, k, v)
    step = lambda q, k, v, beta, g, h0: _recurrence(q, k, v, beta, g, h0, scale)
    if cu_seqlens is None:
        o, ht = step(q, k, v, beta, g, initial_state)
    else:
        o, ht = per_sequence(step, [q, k, v, beta, g], initial_state, cu_seqlens)
    return o, ht if output_final_state else None
