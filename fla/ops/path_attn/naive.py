"""PaTH attention in plain PyTorch.

* :func:`naive_path_attn`: the reference, token by token: each token applies its Householder factor to the
  earlier keys, then attends (float64 inputs give float64 results).
* :func:`path_attn_torch`: the CPU path of :func:`fla.ops.path_attn.parallel_path_attn`, the chunked (UT / WY)
  form of ``README.md`` on whole score matrices, differentiable through autograd; it is also the backward of
  the Triton path (recomputed under autograd).
* :func:`path_transform_keys`: the keys as the last token of their sequence sees them (the decoding cache).
* :func:`path_rank_one_update`: one new token's Householder factor applied to cached keys (decoding).

Scores (per query head; ``H_t = I - beta_t w_t w_t^T``, ``G`` the per-sequence cumsum of the log gate ``g``)::

    s_ij = scale * (q_i^T H_i H_{i-1} ... H_{j+1} k_j + G_i - G_j)      for j <= i
    o_i  = sum_j softmax_j(s_i.) v_j
"""

from __future__ import annotations

import torch

from fla.ops.common.cumsum import global_cumsum_torch

CHUNK = 64  # chunk length of the chunked form (the Triton kernels use the same)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _bounds(B: int, T: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """``(batch row, first token, end)`` of every sequence."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = cu_seqlens.tolist()
    return [(0, a, e) for a, e in zip(cu[:-1], cu[1:])]


def naive_path_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The step-by-step reference, token by token: token ``i`` first applies its Householder factor ``H_i`` to
    every earlier key of its sequence (so key ``j`` has become ``H_i ... H_{j+1} k_j``), appends its own key,
    then attends over them with a plain softmax.

    Args:
        q: ``[B, T, HQ, K]``; k, w: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``.
        g: ``[B, T, HQ]`` log forget gates or ``None``; scale: default ``K ** -0.5``.
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o [B, T, HQ, V]`` float32 (float64 for float64 inputs).
    """
    B, T, HQ, K = q.shape
    groups = HQ // k.shape[2]
    scale = K**-0.5 if scale is None else scale
    dtype = _compute_dtype(q)
    q, k, v, w, beta = (x.to(dtype) for x in (q, k, v, w, beta))
    G = None if g is None else global_cumsum_torch(g.to(dtype), cu_seqlens)
    rows = []
    for b, bos, eos in _bounds(B, T, cu_seqlens):
        keys = k[b, bos:bos]  # [0, H, K]: the keys as the current token sees them
        for i in range(bos, eos):
            keys = torch.cat([path_rank_one_update(keys, w[b, i], beta[b, i]), k[b, i][None]])
            s = torch.einsum("hk,jhk->hj", q[b, i], keys.repeat_interleave(groups, 1))  # [HQ, i - bos + 1]
            if G is not None:
                s = s + G[b, i][:, None] - G[b, bos : i + 1].T
            p = torch.softmax(s * scale, -1)
            rows.append((b, torch.einsum("hj,jhv->hv", p, v[b, bos : i + 1].repeat_interleave(groups, 1))))
    o = torch.stack([r for _, r in rows])  # [B * T, HQ, V], batch rows in order
    return o.view(B, T, HQ, -1)


def _chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """``[H, L, ...] -> [H, N, C, ...]``, zero-padded to ``N * C`` tokens."""
    L = x.shape[1]
    pad = (-L) % C
    if pad:
        x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], 1)
    return x.view(x.shape[0], -1, C, *x.shape[2:])


def path_chunk_factors(w: torch.Tensor, beta: torch.Tensor, k: torch.Tensor, C: int = CHUNK):
    """The per-chunk UT / WY factors of one sequence (``README.md``).

    Args:
        w, k: ``[H, L, K]``; beta: ``[H, L]`` (compute dtype).
    Returns:
        ``W [H, N, C, K]`` (the chunked ``w``), ``U = Tm diag(beta) W`` ``[H, N, C, K]`` (so that the chunk's
        product is ``H_last ... H_first = I - W^T U``), ``TM = Tm strict_lower(diag(beta) W k^T)``
        ``[H, N, C, C]`` and the keys ``k_hat = k - TM^T W`` ``[H, N, C, K]`` carried to the chunk's end.
    """
    W, Kc, bt = _chunks(w, C), _chunks(k, C), _chunks(beta, C)
    eye = torch.eye(C, dtype=w.dtype, device=w.device)
    bW = bt[..., None] * W
    A = torch.tril(bW @ W.transpose(-1, -2), -1)  # [H, N, C, C]
    Tm = torch.linalg.solve_triangular(eye + A, eye.expand_as(A), upper=False, unitriangular=True)
    U = Tm @ bW
    TM = Tm @ torch.tril(bW @ Kc.transpose(-1, -2), -1)
    k_hat = Kc - TM.transpose(-1, -2) @ W
    return W, U, TM, k_hat


def _sequence_scores(q, k, w, beta, C: int) -> torch.Tensor:
    """``q_i^T H_i ... H_{j+1} k_j`` for all ``j <= i`` of one sequence (``q, k, w [H, L, K]``, ``beta [H, L]``):
    ``[H, L, L]``, zero above the diagonal."""
    Hn, L, _ = q.shape
    W, U, TM, k_hat = path_chunk_factors(w, beta, k, C)
    Qc, Kc = _chunks(q, C), _chunks(k, C)
    N = Qc.shape[1]
    QW = torch.tril(Qc @ W.transpose(-1, -2))  # [H, N, C, C]: q_i . w_s for s <= i
    blocks = q.new_zeros(Hn, N, N, C, C)
    idx = torch.arange(N, device=q.device)
    blocks[:, idx, idx] = torch.tril(Qc @ Kc.transpose(-1, -2)) - QW @ TM  # the diagonal blocks
    # queries of chunks c = d .. N-1 carried to the end of key chunk c - d + 1 (rows q_i^T H_i ... ):
    cur = (Qc - QW @ U)[:, 1:]  # d = 1: q_i^T H_i ... H_first(chunk of i)
    for d in range(1, N):
        blocks[:, idx[d:], idx[: N - d]] = cur @ k_hat[:, : N - d].transpose(-1, -2)
        # carry past key chunk c - d (product I - W^T U): row q <- q - (q W^T) U, for c = d+1 .. N-1
        nxt = cur[:, 1:]
        cur = nxt - (nxt @ W[:, 1 : N - d].transpose(-1, -2)) @ U[:, 1 : N - d]
    scores = blocks.permute(0, 1, 3, 2, 4).reshape(Hn, N * C, N * C)
    return scores[:, :L, :L]


def path_attn_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    cu_seqlens: torch.Tensor | None,
    chunk_size: int = CHUNK,
) -> torch.Tensor:
    """The PyTorch path of :func:`fla.ops.path_attn.parallel_path_attn` (checked inputs, ``scale`` given): the
    chunked scores (batch rows and heads together; one sequence at a time when packed), the masked softmax and
    ``p v``; autograd gives the backward. Chunks are ``min(chunk_size, L)`` long (any length is exact). It computes
    in its own dtype (float32 at least): run it with autocast off, as ``parallel_path_attn`` does.

    Returns:
        ``o [B, T, HQ, V]`` in ``q.dtype``.
    """
    B, T, HQ, _ = q.shape
    groups = HQ // k.shape[2]
    dtype = _compute_dtype(q)
    G = None if g is None else global_cumsum_torch(g.to(dtype), cu_seqlens)

    def heads_first(x: torch.Tensor, expand: bool) -> torch.Tensor:  # [B, L, h, ...] -> [B * HQ, L, ...]
        x = x.to(dtype).repeat_interleave(groups, 2) if expand else x.to(dtype)
        return x.transpose(1, 2).flatten(0, 1)

    bounds = [(0, T)] if cu_seqlens is None else [(a, e) for _, a, e in _bounds(B, T, cu_seqlens)]
    outs = []
    for bos, eos in bounds:
        L = eos - bos
        qs = heads_first(q[:, bos:eos], False)  # [B * HQ, L, K]
        ks, vs, ws, bs = (heads_first(x[:, bos:eos], True) for x in (k, v, w, beta))
        s = _sequence_scores(qs, ks, ws, bs, min(chunk_size, L))
        if G is not None:
            Gs = heads_first(G[:, bos:eos], False)  # [B * HQ, L]
            s = s + Gs[:, :, None] - Gs[:, None, :]
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        p = torch.softmax((s * scale).masked_fill(~causal, float("-inf")), -1)
        outs.append((p @ vs).view(B, HQ, L, -1).transpose(1, 2))  # [B, L, HQ, V]
    return torch.cat(outs, 1).to(q.dtype)


def path_transform_keys(
    k: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = CHUNK,
) -> torch.Tensor:
    """The keys as the last token of their sequence sees them: ``H_last ... H_{j+1} k_j`` (the decoding cache),
    chunked: ``k_hat`` of each chunk carried through every later chunk's ``I - W^T U``.

    Args:
        k, w: ``[B, T, H, K]``; beta: ``[B, T, H]``; cu_seqlens: ``[N+1]`` or ``None``.
    Returns:
        ``[B, T, H, K]`` in ``k.dtype``.
    """
    B, T, H, K = k.shape
    dtype = _compute_dtype(k)
    bounds = [(0, T)] if cu_seqlens is None else [(a, e) for _, a, e in _bounds(B, T, cu_seqlens)]
    outs = []
    for bos, eos in bounds:
        L = eos - bos
        ks, ws = (x[:, bos:eos].to(dtype).transpose(1, 2).flatten(0, 1) for x in (k, w))  # [B * H, L, K]
        bs = beta[:, bos:eos].to(dtype).transpose(1, 2).flatten(0, 1)
        W, U, _, cur = path_chunk_factors(ws, bs, ks, min(chunk_size, L))
        N = W.shape[1]
        for d in range(1, N):  # chunks c = 0 .. N-1 carried through chunk c + d
            head = cur[:, : N - d]
            head = head - (head @ U[:, d:].transpose(-1, -2)) @ W[:, d:]
            cur = torch.cat([head, cur[:, N - d :]], 1)
        outs.append(cur.flatten(1, 2)[:, :L].view(B, H, L, K).transpose(1, 2))
    return torch.cat(outs, 1).to(k.dtype)


def path_rank_one_update(k: torch.Tensor, w: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``(I - beta w w^T) k`` for cached keys ``k [..., L, H, K]`` and one token's ``w [..., H, K]``,
    ``beta [..., H]`` (the leading dims broadcast); computed in float32 at least, returned in ``k.dtype``."""
    dtype = _compute_dtype(k)
    kc, wc, bc = k.to(dtype), w.to(dtype).unsqueeze(-3), beta.to(dtype).unsqueeze(-2)
    return (kc - bc[..., None] * (kc * wc).sum(-1, keepdim=True) * wc).to(k.dtype)


__all__ = ["naive_path_attn", "path_attn_torch", "path_chunk_factors", "path_rank_one_update", "path_transform_keys"]
