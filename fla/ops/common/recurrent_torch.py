"""The token-by-token recurrence of gated linear attention in plain PyTorch (the naive references).

Per head, with ``S`` ``[K, V]`` and log-space gates (each optional)::

    S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t
    o_t = scale * q_t S_t

A scalar gate ``g [B, T, H]`` is the vector gate ``g[..., None]`` (broadcast over ``K``).

The delta rule (:func:`recurrent_delta_torch`; ``g_t`` a scalar log decay, gated family only)::

    S'_{t-1} = exp(g_t) S_{t-1}
    S_t      = S'_{t-1} - beta_t k_t (k_t^T S'_{t-1}) + beta_t k_t v_t^T
    o_t      = scale * q_t^T S_t

Comba (erase keys ``p``: the erase reads the state before the decay)::

    S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T

(the recurrence takes ``p`` with either gate kind: with KDA's per-key-channel gate ``exp(g_t)`` is
``diag(exp(gk_t))``; the chunked forms take ``p`` with a scalar gate only).
"""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_scale, expand_groups, l2norm, prepare_qk_beta, total_log_gate
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


def recurrent_gated_torch_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`recurrent_gated_torch` with every gate of the family (each optional): scalar ``g [B, T, H]`` and
    ``g_gamma [H]`` (a vector gate broadcast over ``K``, added to ``gk`` when both are given), vector ``gk``
    ``[B, T, H, K]`` and ``gv`` ``[B, T, H, V]``; ``scale`` defaults to ``K ** -0.5``."""
    g = total_log_gate(g, g_gamma, q)
    if g is not None:  # a scalar gate is a vector gate broadcast over K
        gk = g[..., None] if gk is None else gk + g[..., None]
    scale = default_scale(scale, k)
    return recurrent_gated_torch(q, k, v, gk, gv, scale, initial_state, output_final_state, cu_seqlens)


# the delta-rule family


def _delta_recurrence(q, k, v, beta, g, h0, scale: float, gk=None, p=None) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dtype)
    outs = []
    for t in range(T):
        k_t = k[:, t]  # [B, H, K]
        if p is not None:  # Comba: the erase key reads the state before the decay
            u_t = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", p[:, t].to(dtype), S))
        if g is not None:
            S = S * g[:, t].to(dtype).exp()[..., None, None]
        if gk is not None:  # KDA: the decay per key row of the state
            S = S * gk[:, t].to(dtype).exp()[..., None]
        if p is None:
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
    gk: torch.Tensor | None = None,
    *,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the (gated) delta rule over every token (float64 inputs give a float64 result).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value heads);
            beta: ``[B, T, HV]``; g: ``[B, T, HV]`` log decays or ``None``; initial_state:
            ``[N, HV, K, V]``; cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``);
            use_qk_l2norm_in_kernel / allow_neg_eigval: see :func:`fla.ops.common.inputs.prepare_qk_beta`;
            gk: ``[B, T, HV, K]`` per-key-channel log decays (KDA: ``S <- diag(exp(gk_t)) S`` before the
            delta update) or ``None``; p: ``[B, T, H, K]`` Comba's erase keys (L2-normalized with q and k)
            or ``None`` (with ``g``, ``gk`` or no gate).
    Returns:
        ``o`` ``[B, T, HV, V]`` (float32, float64 for float64 inputs) and the final state
        ``[N, HV, K, V]`` when ``output_final_state``.
    """
    if p is not None and use_qk_l2norm_in_kernel:
        p = l2norm(p)
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval)
    if p is not None:
        _, p = expand_groups(q, p, v)
    q, k = expand_groups(q, k, v)
    step = lambda q, k, v, beta, g, gk, p, h0: _delta_recurrence(q, k, v, beta, g, h0, scale, gk=gk, p=p)
    if cu_seqlens is None:
        o, ht = step(q, k, v, beta, g, gk, p, initial_state)
    else:
        o, ht = per_sequence(step, [q, k, v, beta, g, gk, p], initial_state, cu_seqlens)
    return o, ht if output_final_state else None
