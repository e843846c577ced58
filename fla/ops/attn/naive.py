"""Causal softmax attention (with an optional forget gate) in plain PyTorch.

* :func:`naive_parallel_attn`: the reference, query by query (float64 inputs give float64 results).
* :func:`parallel_attn_torch`: the CPU path of :func:`fla.ops.attn.parallel_attn`, one masked score matrix
  per batch row (differentiable through autograd).
* :func:`naive_attn_decoding`: one query at the end of each packed key sequence (the CPU path and reference
  of :func:`fla.ops.attn.attn_decoding_one_step`).

Scores (per query head; ``G`` the cumulative sum of the log forget gate ``g`` inside each sequence)::

    s_ij = scale * q_i . k_j + G_i - G_j      for j <= i, i - j < window
    o_i  = sum_j softmax_j(s_i.) v_j,  lse_i = log sum_j exp(s_ij)
"""

from __future__ import annotations

import torch

from fla.ops.common.cumsum import global_cumsum_torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _bounds(B: int, T: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """``(batch row, first token, end)`` of every sequence."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = cu_seqlens.tolist()
    return [(0, a, e) for a, e in zip(cu[:-1], cu[1:])]


def naive_parallel_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    window_size: int | None = None,
    causal: bool = True,
    *,
    g: torch.Tensor | None = None,
    sink_bias: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    return_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step-by-step reference (fla 0.6.0's signature, plus ``cu_seqlens`` and ``return_lse``): each query's
    softmax over its visible keys.

    Args:
        q: ``[B, T, HQ, K]``; k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (``HQ % H == 0``).
        scale: default ``K ** -0.5``.
        window_size: keys ``i - window_size < j <= i`` (``None``: all; causal only).
        causal: ``False``: every key of the sequence is visible.
        g: ``[B, T, HQ]`` log forget gates (or ``None``).
        sink_bias: ``[HQ]`` logits of a value-less softmax entry (attention sink), or ``None``.
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
        return_lse: return the log-sum-exp of the scores (sink included) instead of their max.
    Returns:
        ``o [B, T, HQ, V]`` and ``max_logits [B, T, HQ]`` (the largest score, ``max(., sink)``; fla's second
        output) or, with ``return_lse``, ``lse [B, T, HQ]``; float32 (float64 for float64 inputs).
    """
    B, T, HQ, K = q.shape
    groups = HQ // k.shape[2]
    scale = K**-0.5 if scale is None else scale
    dtype = _compute_dtype(q)
    q, k, v = q.to(dtype), k.to(dtype).repeat_interleave(groups, 2), v.to(dtype).repeat_interleave(groups, 2)
    G = None if g is None else global_cumsum_torch(g.to(dtype), cu_seqlens)
    o = q.new_zeros(B, T, HQ, v.shape[-1])
    stat = q.new_zeros(B, T, HQ)
    for b, bos, eos in _bounds(B, T, cu_seqlens):
        for i in range(bos, eos):
            lo = bos if window_size is None or not causal else max(bos, i - window_size + 1)
            hi = i + 1 if causal else eos
            s = torch.einsum("hk,jhk->hj", q[b, i], k[b, lo:hi]) * scale  # [HQ, keys]
            if G is not None:
                s = s + G[b, i][:, None] - G[b, lo:hi].T
            if sink_bias is not None:  # a last column without a value
                s = torch.cat([s, sink_bias.to(dtype)[:, None]], 1)
            stat[b, i] = torch.logsumexp(s, -1) if return_lse else s.max(-1).values
            o[b, i] = torch.einsum("hj,jhv->hv", torch.softmax(s, -1)[:, : hi - lo], v[b, lo:hi])
    return o, stat


def _visible(T: int, window_size: int | None, cu_seqlens: torch.Tensor | None, device) -> torch.Tensor:
    """``[T, T]`` bool: key ``j`` visible to query ``i`` (causal, window, same sequence)."""
    pos = torch.arange(T, device=device)
    delta = pos[:, None] - pos[None, :]
    mask = delta >= 0
    if window_size is not None:
        mask &= delta < window_size
    if cu_seqlens is not None:
        from fla.ops.utils import prepare_sequence_ids

        seq = prepare_sequence_ids(cu_seqlens)
        mask &= seq[:, None] == seq[None, :]
    return mask


def parallel_attn_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    window_size: int | None,
    cu_seqlens: torch.Tensor | None,
    sink_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path of :func:`fla.ops.attn.parallel_attn` (checked inputs, ``scale`` given).

    Returns:
        ``o [B, T, HQ, V]`` in ``q.dtype`` and ``lse [B, T, HQ]`` float32 (float64 for float64 inputs).
    """
    B, T, HQ, _ = q.shape
    groups = HQ // k.shape[2]
    dtype = _compute_dtype(q)
    qc = q.to(dtype).transpose(1, 2)  # [B, HQ, T, K]
    kc = k.to(dtype).repeat_interleave(groups, 2).transpose(1, 2)
    vc = v.to(dtype).repeat_interleave(groups, 2).transpose(1, 2)
    s = qc @ kc.transpose(-1, -2) * scale  # [B, HQ, T, T]
    if g is not None:
        G = global_cumsum_torch(g.to(dtype), cu_seqlens).transpose(1, 2)  # [B, HQ, T]
        s = s + G[..., :, None] - G[..., None, :]
    s = s.masked_fill(~_visible(T, window_size, cu_seqlens, q.device), float("-inf"))
    lse = torch.logsumexp(s, -1)  # every query sees itself: finite
    if sink_bias is not None:
        lse = torch.logaddexp(lse, sink_bias.to(dtype)[None, :, None])
    o = torch.exp(s - lse[..., None]) @ vc
    return o.transpose(1, 2).to(q.dtype), lse.transpose(1, 2)


def naive_attn_decoding(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    do_gate_scale: bool = False,
    *,
    window_size: int | None = None,
    sink_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """One query per sequence at the end of its keys (fla 0.6.0's signature; the CPU path of
    ``attn_decoding_one_step``).

    Args:
        q: ``[1, N, HQ, K]``; k: ``[1, L, H, K]``; v: ``[1, L, H, V]`` packed by ``cu_seqlens [N+1]`` (required).
        g: ``[1, L, HQ]`` log forget gates (or ``None``); scale: default ``K ** -0.5``.
        do_gate_scale: multiply ``g`` by ``scale`` too.
        window_size: the last ``window_size`` keys of each sequence (``None``: all; 0: none).
        sink_bias: ``[HQ]`` attention-sink logits (denominator only), or ``None``.
    Returns:
        ``o [1, N, HQ, V]`` in ``q.dtype`` (zeros for a sequence without visible keys).
    """
    if cu_seqlens is None:
        raise ValueError("cu_seqlens is required: naive_attn_decoding packs the key sequences of the batch")
    HQ, V = q.shape[2], v.shape[-1]
    groups = HQ // k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if g is not None and do_gate_scale:
        g = g * scale
    dtype = _compute_dtype(q)
    o = torch.zeros(1, q.shape[1], HQ, V, dtype=dtype, device=q.device)
    for n, (bos, eos) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        lo = bos if window_size is None else max(bos, eos - window_size)
        if lo >= eos:
            continue
        kn = k[0, lo:eos].to(dtype).repeat_interleave(groups, 1)  # [L_n, HQ, K]
        vn = v[0, lo:eos].to(dtype).repeat_interleave(groups, 1)
        s = torch.einsum("hk,jhk->hj", q[0, n].to(dtype), kn) * scale
        if g is not None:
            # G_last - G_j = sum of the gates after key j
            after = g[0, lo:eos].to(dtype).flip(0).cumsum(0).flip(0) - g[0, lo:eos].to(dtype)  # [L_n, HQ]
            s = s + after.T
        if sink_bias is not None:
            s = torch.cat([s, sink_bias.to(dtype)[:, None]], 1)
        o[0, n] = torch.einsum("hj,jhv->hv", torch.softmax(s, -1)[:, : vn.shape[0]], vn)
    return o.to(q.dtype)
