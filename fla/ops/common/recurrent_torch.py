"""The token-by-token recurrence of gated linear attention in plain PyTorch (the naive references).

Per head, with ``S`` ``[K, V]`` and log-space gates (each optional)::

    S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t
    o_t = scale * q_t S_t

A scalar gate ``g [B, T, H]`` is the vector gate ``g[..., None]`` (broadcast over ``K``).
"""

from __future__ import annotations

import torch

from fla.ops.utils.varlen import per_sequence


def _recurrence(q, k, v, gk, gv, h0, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v = (x.to(dtype) for x in (q, k, v))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dtype)
    outs = []
    for t in range(T):
        if gk is not None:
            S = S * gk[:, t].to(dtype).exp()[..., None]
        if gv is not None:
            S = S * gv[:, t].to(dtype).exp()[..., None, :]
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, V)
    return o, S


def recurrent_gated_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor | None,
    gv: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence over every token (float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; gk: ``[B, T, H, K]`` (or ``[B, T, H, 1]`` for a
            scalar gate) / gv: ``[B, T, H, V]`` log decays or ``None``; initial_state: ``[N, H, K, V]``;
            cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, H, K, V]`` when ``output_final_state``.
    """
    step = lambda q, k, v, gk, gv, h0: _recurrence(q, k, v, gk, gv, h0, scale)
    if cu_seqlens is None:
        o, ht = step(q, k, v, gk, gv, initial_state)
    else:
        o, ht = per_sequence(step, [q, k, v, gk, gv], initial_state, cu_seqlens)
    return o, ht if output_final_state else None
