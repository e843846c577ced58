"""NSA in plain PyTorch, one sequence at a time with dense masks: the float64 reference of the Triton path and
the CPU implementation :func:`fla.ops.nsa.parallel_nsa` dispatches to.

Per sequence, the queries are the last ``TQ`` of the ``TK`` key positions (``pos = TK - TQ + t``); see README.md.
"""

from __future__ import annotations

import torch

from fla.ops.nsa.index import split_cu_seqlens


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _sequences(B: int, TQ: int, TK: int, cu_seqlens) -> list[tuple[int, slice, slice]]:
    """``(batch row, query slice, key slice)`` of every sequence."""
    cu_q, cu_k = split_cu_seqlens(cu_seqlens)
    if cu_q is None:
        return [(b, slice(0, TQ), slice(0, TK)) for b in range(B)]
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    return [(0, slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])) for i in range(len(cu_q) - 1)]


def _pool(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``x [T, H, D]`` -> block means ``[ceil(T / BS), H, D]`` (the last block: mean of the tokens it has)."""
    T = x.shape[0]
    TC = -(-T // block_size)
    padded = x.new_zeros(TC * block_size, *x.shape[1:])
    padded[:T] = x
    count = torch.clamp(T - torch.arange(TC, device=x.device) * block_size, max=block_size).to(x.dtype)
    return padded.view(TC, block_size, *x.shape[1:]).sum(1) / count.view(-1, 1, 1)


def _expand(x: torch.Tensor, G: int) -> torch.Tensor:
    """Key/value heads -> query heads: ``[..., H, D]`` -> ``[..., H * G, D]``."""
    return x.repeat_interleave(G, dim=-2)


def _softmax_attend(s: torch.Tensor, mask: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s [TQ, HQ, L]`` masked by ``mask`` (broadcast) over ``v [L, HQ, V]`` -> ``(o [TQ, HQ, V], lse [TQ, HQ])``;
    a query that sees nothing gets ``o = 0`` and ``lse = -inf``."""
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.unsqueeze(-1).masked_fill(torch.isinf(lse).unsqueeze(-1), 0.0))
    return torch.einsum("thl,lhv->thv", p, v), lse


def _cmp_seq(q, kc, vc, pos, block_size, scale):
    """Compressed attention of one sequence: block ``c`` is visible once complete, ``(c + 1) BS - 1 <= pos``."""
    G = q.shape[1] // kc.shape[1]
    c = torch.arange(kc.shape[0], device=q.device)
    mask = ((c[None, :] + 1) * block_size - 1 <= pos[:, None])[:, None, :]
    s = torch.einsum("thk,chk->thc", q, _expand(kc, G)) * scale
    return _softmax_attend(s, mask, _expand(vc, G))


def rank_blocks(p: torch.Tensor, pos: torch.Tensor, G: int, block_size: int, S: int, n_sel) -> torch.Tensor:
    """fla's top-S block choice from the compressed-attention probabilities of one sequence.

    Args:
        p: ``[TQ, HQ, TC]`` probabilities ``exp(s - lse)`` of the compressed branch (heads of a group adjacent).
        pos: ``[TQ]`` query positions; the query's block is ``pos // BS``.
        n_sel: ``[TQ, H]`` blocks to keep per query (``<= S``), or ``None`` (all ``S``).
    Returns:
        ``[TQ, H, S]`` int32 block indices, highest importance first, ``-1`` padded.

    Importance of block ``c`` < the query's block: the sum of ``p`` over the group's heads; the first block,
    the query's block and the one before it are always taken (importance ``G``, the largest possible);
    blocks after the query's block are never taken. Equal importances rank the later block first.
    """
    TQ, HQ, TC = p.shape
    H = HQ // G
    score = p.reshape(TQ, H, G, TC).sum(2)
    c = torch.arange(TC, device=p.device)[None, None, :]
    cur = (pos // block_size)[:, None, None]
    score = torch.where(c < cur, score, 0.0)
    score = torch.where((c == 0) | (c == cur) | (c == cur - 1), float(G), score)
    score = torch.where(c > cur, -1.0, score)
    # ties (the forced blocks when S < 3, equal probabilities) go to the later block: a stable descending sort of
    # the blocks in reverse order, so the choice never depends on how many blocks follow the query
    top, rev = torch.sort(score.flip(-1), dim=-1, descending=True, stable=True)
    top, idx = top[..., : min(S, TC)], TC - 1 - rev[..., : min(S, TC)]
    idx = torch.where(top >= 0, idx, -1)
    if n_sel is not None:
        slot = torch.arange(idx.shape[-1], device=p.device)
        idx = torch.where(slot < n_sel[..., None], idx, -1)
    if idx.shape[-1] < S:
        idx = torch.cat([idx, idx.new_full((TQ, H, S - idx.shape[-1]), -1)], -1)
    return idx.to(torch.int32)


def _slc_seq(q, k, v, idx, n_sel, pos, block_size, scale):
    """Selected attention of one sequence over the keys of the blocks in ``idx [TQ, H, S]`` (``-1``: none)."""
    TQ, HQ, _ = q.shape
    TK, H = k.shape[:2]
    G = HQ // H
    TC = -(-TK // block_size)
    slot = torch.arange(idx.shape[-1], device=q.device)
    valid = (idx >= 0) & (idx.long() * block_size <= pos[:, None, None])
    if n_sel is not None:
        valid &= slot < n_sel[..., None]
    chosen = torch.zeros(TQ, H, TC + 1, dtype=torch.bool, device=q.device)
    chosen.scatter_(-1, torch.where(valid, idx.long(), TC), True)  # slot TC collects the unused entries
    j = torch.arange(TK, device=q.device)
    mask = chosen[:, :, j // block_size] & (j[None, None, :] <= pos[:, None, None])  # [TQ, H, TK]
    s = torch.einsum("thk,lhk->thl", q, _expand(k, G)) * scale
    return _softmax_attend(s, mask.repeat_interleave(G, dim=1), _expand(v, G))[0]


def _swa_seq(q, k, v, pos, window_size, scale):
    """Sliding-window attention of one sequence: keys ``j`` with ``pos - window_size < j <= pos``."""
    G = q.shape[1] // k.shape[1]
    j = torch.arange(k.shape[0], device=q.device)
    d = pos[:, None] - j[None, :]
    mask = ((d >= 0) & (d < window_size))[:, None, :]
    s = torch.einsum("thk,lhk->thl", q, _expand(k, G)) * scale
    return _softmax_attend(s, mask, _expand(v, G))[0]


def _n_sel(block_counts, b: int, qs: slice):
    return None if isinstance(block_counts, int) else block_counts[b, qs].long()


def naive_nsa_compression(
    q: torch.Tensor,
    k_cmp: torch.Tensor,
    v_cmp: torch.Tensor,
    block_size: int,
    scale: float,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compressed branch (fla 0.6.0's ``naive_nsa_compression``): q ``[B, TQ, HQ, K]`` over the block means
    ``k_cmp [B, TC, H, K]``, ``v_cmp [B, TC, H, V]`` (packed per sequence with ``cu_seqlens``, ``TQ == TK``).

    Returns ``(o [B, TQ, HQ, V] in q.dtype, lse [B, TQ, HQ])`` (``lse = -inf`` where no block is complete)."""
    dt = _compute_dtype(q)
    B, T = q.shape[:2]
    outs, lses = [], []
    c0 = 0
    for b, qs, _ in _sequences(B, T, T, cu_seqlens):
        n = qs.stop - qs.start
        TC = -(-n // block_size)
        cs = slice(0, k_cmp.shape[1]) if cu_seqlens is None else slice(c0, c0 + TC)
        c0 += TC
        pos = torch.arange(n, device=q.device)
        o, lse = _cmp_seq(q[b, qs].to(dt), k_cmp[b, cs].to(dt), v_cmp[b, cs].to(dt), pos, block_size, scale)
        outs.append(o)
        lses.append(lse)
    cat = 0 if cu_seqlens is not None else None
    o = torch.cat(outs, 0)[None] if cat == 0 else torch.stack(outs)
    lse = torch.cat(lses, 0)[None] if cat == 0 else torch.stack(lses)
    return o.to(q.dtype), lse


def naive_nsa_selection(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_indices: torch.Tensor,
    block_size: int = 64,
    scale: float | None = None,
    cu_seqlens=None,
) -> torch.Tensor:
    """Selected branch alone (fla 0.6.0's ``naive_nsa_selection``): q ``[B, T, HQ, K]`` over the keys (up to the
    query) of the blocks ``block_indices [B, T, H, S]`` (``-1``: none) -> ``o [B, T, HQ, V]`` in ``q.dtype``."""
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    dt = _compute_dtype(q)
    B, TQ = q.shape[:2]
    out = []
    for b, qs, ks in _sequences(B, TQ, k.shape[1], cu_seqlens):
        q_s, k_s, v_s = q[b, qs].to(dt), k[b, ks].to(dt), v[b, ks].to(dt)
        pos = k_s.shape[0] - q_s.shape[0] + torch.arange(q_s.shape[0], device=q.device)
        out.append(_slc_seq(q_s, k_s, v_s, block_indices[b, qs], None, pos, block_size, scale))
    o = torch.cat(out, 0)[None] if cu_seqlens is not None else torch.stack(out)
    return o.to(q.dtype)


def naive_nsa_topk(
    q: torch.Tensor,
    k_cmp: torch.Tensor,
    block_counts: torch.Tensor | int,
    block_size: int,
    scale: float | None = None,
    cu_seqlens=None,
) -> torch.Tensor:
    """Top-S block selection (fla 0.6.0's ``naive_nsa_topk``) from q ``[B, TQ, HQ, K]`` and the block means
    ``k_cmp [B, TC, H, K]`` (packed sequence by sequence with ``cu_seqlens``, which may be a
    ``(cu_seqlens_q, cu_seqlens_k)`` pair): ``[B, TQ, H, S]`` int32, ``S = block_counts`` (or its max), ``-1``
    padded. See :func:`rank_blocks`."""
    scale = k_cmp.shape[-1] ** -0.5 if scale is None else scale
    dt = _compute_dtype(q)
    B, TQ, HQ, _ = q.shape
    G = HQ // k_cmp.shape[2]
    S = block_counts if isinstance(block_counts, int) else int(block_counts.max())
    TK = k_cmp.shape[1] * block_size  # only the block count of each sequence matters below
    out, c0 = [], 0
    for b, qs, ks in _sequences(B, TQ, TK, cu_seqlens):
        n_k = ks.stop - ks.start
        TC = -(-n_k // block_size)
        cs = slice(0, k_cmp.shape[1]) if cu_seqlens is None else slice(c0, c0 + TC)
        c0 += TC
        q_s, kc = q[b, qs].to(dt), k_cmp[b, cs].to(dt)
        pos = (
            (n_k if cu_seqlens is not None else q.shape[1]) - q_s.shape[0] + torch.arange(q_s.shape[0], device=q.device)
        )
        c = torch.arange(kc.shape[0], device=q.device)
        s = torch.einsum("thk,chk->thc", q_s, _expand(kc, G)) * scale
        s = s.masked_fill(~((c[None, :] + 1) * block_size - 1 <= pos[:, None])[:, None, :], float("-inf"))
        p = torch.nan_to_num(torch.softmax(s, -1), nan=0.0)
        out.append(rank_blocks(p, pos, G, block_size, S, _n_sel(block_counts, b, qs)))
    return torch.cat(out, 0)[None] if cu_seqlens is not None else torch.stack(out)


def naive_nsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_cmp: torch.Tensor | None = None,
    g_slc: torch.Tensor | None = None,
    g_swa: torch.Tensor | None = None,
    block_indices: torch.Tensor | None = None,
    block_counts: torch.Tensor | int = 16,
    block_size: int = 64,
    window_size: int = 0,
    scale: float | None = None,
    cu_seqlens=None,
    return_block_indices: bool = False,
):
    """NSA, the three branches mixed by their gates (fla 0.6.0's ``naive_nsa``; arguments as
    :func:`fla.ops.nsa.parallel_nsa`): ``o = g_slc o_slc + g_cmp o_cmp + g_swa o_swa``.

    Returns ``o [B, TQ, HQ, V]`` in ``q.dtype`` (and ``block_indices [B, TQ, H, S]`` when asked).
    """
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    dt = _compute_dtype(q)
    B, TQ, HQ, _ = q.shape
    H = k.shape[2]
    G = HQ // H
    S = block_counts if isinstance(block_counts, int) else int(block_counts.max())
    o_all, idx_all = [], []
    for b, qs, ks in _sequences(B, TQ, k.shape[1], cu_seqlens):
        q_s, k_s, v_s = q[b, qs].to(dt), k[b, ks].to(dt), v[b, ks].to(dt)
        pos = k_s.shape[0] - q_s.shape[0] + torch.arange(q_s.shape[0], device=q.device)
        n_sel = _n_sel(block_counts, b, qs)
        o = 0
        if g_cmp is not None:
            o_cmp, lse = _cmp_seq(q_s, _pool(k_s, block_size), _pool(v_s, block_size), pos, block_size, scale)
            o = o + o_cmp * g_cmp[b, qs].to(dt).unsqueeze(-1)
            if block_indices is None:
                with torch.no_grad():
                    kc = _pool(k_s.detach(), block_size)
                    s = torch.einsum("thk,chk->thc", q_s.detach(), _expand(kc, G)) * scale
                    p = torch.where(torch.isinf(lse)[..., None], 0.0, torch.exp(s - lse.detach()[..., None]))
                    c = torch.arange(kc.shape[0], device=q.device)
                    p = p.masked_fill(~((c[None, :] + 1) * block_size - 1 <= pos[:, None])[:, None, :], 0.0)
                    idx = rank_blocks(p, pos, G, block_size, S, n_sel)
        if block_indices is not None:
            idx = block_indices[b, qs]
        o_slc = _slc_seq(q_s, k_s, v_s, idx, n_sel, pos, block_size, scale)
        o = o + (o_slc if g_slc is None else o_slc * g_slc[b, qs].to(dt).unsqueeze(-1))
        if window_size and window_size > 0:
            o = o + _swa_seq(q_s, k_s, v_s, pos, window_size, scale) * g_swa[b, qs].to(dt).unsqueeze(-1)
        o_all.append(o)
        idx_all.append(idx)
    varlen = cu_seqlens is not None
    o = (torch.cat(o_all, 0)[None] if varlen else torch.stack(o_all)).to(q.dtype)
    if return_block_indices:
        return o, (torch.cat(idx_all, 0)[None] if varlen else torch.stack(idx_all))
    return o


__all__ = ["naive_nsa", "naive_nsa_compression", "naive_nsa_selection", "naive_nsa_topk", "rank_blocks"]
