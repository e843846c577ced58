"""NSA (native sparse attention, Yuan et al. 2025) with fla 0.6.0's public ops: :func:`parallel_nsa`,
:func:`parallel_nsa_compression`, :func:`parallel_nsa_topk`. Maths: README.md."""

from __future__ import annotations

import warnings

import torch

from fla.ops.attn.parallel import parallel_attn
from fla.ops.nsa.compression import NSACompressionFunction, parallel_nsa_compression
from fla.ops.nsa.index import NSATables, build_tables, flat_tokens, mean_pooling, split_cu_seqlens
from fla.ops.nsa.inputs import check_branch_inputs, check_nsa_inputs
from fla.ops.nsa.naive import naive_nsa, rank_blocks
from fla.ops.nsa.selection import NSASelectionFunction
from fla.ops.nsa.topk import select_blocks_triton, topk_fits
from fla.utils.backend import dispatch, select_backend

TOPK_ELEMENTS = 2**25  # gathered compressed keys per top-k step (bounds its memory)


def select_blocks(
    q: torch.Tensor,
    kc: torch.Tensor,
    lse: torch.Tensor,
    tables: NSATables,
    S: int,
    block_counts: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Top-S blocks of flat queries ``q [NQ, HQ, K]`` from the block means ``kc [NB, H, K]`` and the compressed
    branch's ``lse [NQ, HQ]`` (:func:`fla.ops.nsa.naive.rank_blocks`): ``[NQ, H, S]`` int32 (no gradient). One
    Triton kernel (:mod:`fla.ops.nsa.topk`) on the Triton backend, for up to its
    :data:`~fla.ops.nsa.topk.MAX_BLOCKS` blocks per sequence and 16/32-bit inputs; else :func:`select_blocks_torch`."""
    triton_ok = topk_fits(tables) and q.dtype != torch.float64
    impl = select_blocks_triton if triton_ok and select_backend(q, kc, lse) == "triton" else select_blocks_torch
    return impl(q, kc, lse, tables, S, block_counts, scale)  # neither builds a graph


def select_blocks_torch(
    q: torch.Tensor,
    kc: torch.Tensor,
    lse: torch.Tensor,
    tables: NSATables,
    S: int,
    block_counts: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """:func:`select_blocks` in torch (any number of blocks; the reference of the kernel's tests).

    Each query scores the ``C = max_blocks`` blocks from its sequence's first one (those past its own position are
    masked). Packed sequences gather them per query (``[Q, C, H, K]`` per step of ``Q`` queries); without
    ``cu_seqlens`` every query of a batch row shares its row's blocks, so a step is one product with them and
    nothing is gathered: as many whole rows per step as ``TOPK_ELEMENTS`` scores allow (few launches: the
    selection is host-bound at training sizes), else one row in steps of queries."""
    NQ, HQ, K = q.shape
    H = kc.shape[1]
    G, C = HQ // H, max(tables.max_blocks, 1)
    out = torch.empty(NQ, H, S, dtype=torch.int32, device=q.device)
    with torch.no_grad():
        kc = kc.float()
        if tables.dense_rows and tables.num_blocks == tables.dense_rows * C:
            R = tables.dense_rows
            TQ = NQ // R
            # a step: as many whole rows as TOPK_ELEMENTS scores allow, or (a row alone past it) part of one row
            rows = max(1, TOPK_ELEMENTS // max(TQ * C * HQ, 1))
            step = max(1, min(TQ, TOPK_ELEMENTS // (rows * C * HQ)))  # queries of each row per step
            q_rows, kc_rows = q.reshape(R, TQ, H, G, K), kc.reshape(R, C, H, K)
            for r0 in range(0, R, rows):
                r1 = min(R, r0 + rows)
                for i0 in range(0, TQ, step):
                    i1 = min(TQ, i0 + step)
                    s = torch.einsum("rqhgk,rchk->rqhgc", q_rows[r0:r1, i0:i1].float(), kc_rows[r0:r1])
                    sl = slice(r0 * TQ + i0, (r1 - 1) * TQ + i1)  # whole rows (i0 = 0, i1 = TQ) or one row's part
                    out[sl] = _rank_step(s.reshape(-1, H, G, C), lse, tables, sl, S, block_counts, scale)
            return out
        step = max(1, TOPK_ELEMENTS // (C * H * K))
        c = torch.arange(C, device=q.device)
        for i0 in range(0, NQ, step):
            sl = slice(i0, min(NQ, i0 + step))
            boc = tables.tok_boc[sl].long()
            blocks = (boc[:, None] + c[None, :]).clamp(max=max(tables.num_blocks - 1, 0))  # [Q, C]
            s = torch.einsum("qhgk,qchk->qhgc", q[sl].float().view(-1, H, G, K), kc[blocks])
            out[sl] = _rank_step(s, lse, tables, sl, S, block_counts, scale)
    return out


def _rank_step(s, lse, tables, sl, S, block_counts, scale) -> torch.Tensor:
    """:func:`select_blocks` on the queries ``sl``: their scores ``s [Q, H, G, C]`` (unscaled) -> ``[Q, H, S]``."""
    Q, H, G, C = s.shape
    pos = tables.tok_pos[sl].long()
    c = torch.arange(C, device=s.device)
    p = torch.exp(s.reshape(Q, H * G, C) * scale - lse[sl, :, None])
    p = p.masked_fill(~((c[None, :] + 1) * tables.block_size - 1 <= pos[:, None])[:, None, :], 0.0)
    n_sel = None if block_counts is None else block_counts[sl]
    return rank_blocks(p, pos, G, tables.block_size, S, n_sel)


def _swa(q, k, v, window_size, scale, cu_seqlens, tables):
    """Sliding-window branch: :func:`fla.ops.attn.parallel_attn` (queries = keys), or, when the queries are the
    last few of the keys (decoding after a cache), each query over its gathered window of keys in torch."""
    if tables.same_layout:
        return parallel_attn(q, k, v, scale=scale, window_size=window_size, cu_seqlens=split_cu_seqlens(cu_seqlens)[0])
    B, TQ, HQ, _ = q.shape
    H = k.shape[2]
    pos = tables.tok_pos.long()
    j = pos[:, None] - window_size + 1 + torch.arange(window_size, device=q.device)  # [NQ, W] key positions
    seen = j >= 0
    flat = (tables.tok_bos.long()[:, None] + j.clamp(min=0)).clamp(max=k.shape[0] * k.shape[1] - 1)
    kw, vw = flat_tokens(k)[flat].float(), flat_tokens(v)[flat].float()  # [NQ, W, H, *]
    qf = flat_tokens(q).float().view(-1, H, HQ // H, q.shape[-1])
    s = torch.einsum("nhgk,nwhk->nhgw", qf, kw) * scale
    p = torch.softmax(s.masked_fill(~seen[:, None, None, :], float("-inf")), -1)
    o = torch.einsum("nhgw,nwhv->nhgv", p, vw)
    return o.reshape(B, TQ, HQ, v.shape[-1]).to(q.dtype)


def _nsa_triton(q, k, v, g_cmp, g_slc, g_swa, block_indices, block_counts, block_size, window_size, scale, cu_seqlens):
    B, TQ, HQ, _ = q.shape
    V = v.shape[-1]
    tables = build_tables(B, TQ, k.shape[1], block_size, cu_seqlens, q.device)
    qf, kf, vf = flat_tokens(q), flat_tokens(k), flat_tokens(v)
    counts = None if isinstance(block_counts, int) else flat_tokens(block_counts).to(torch.int32).contiguous()
    o_cmp = None
    if g_cmp is not None:
        kc, vc = mean_pooling(kf, tables), mean_pooling(vf, tables)
        o_cmp, lse = NSACompressionFunction.apply(qf, kc, vc, tables, scale)
        if block_indices is None:
            S = block_counts if counts is None else int(block_counts.max())
            block_indices = select_blocks(qf.detach(), kc.detach(), lse, tables, S, counts, scale)
        else:
            warnings.warn("block_indices is given: it overrides the selection computed from compression", stacklevel=3)
            block_indices = flat_tokens(block_indices)
    else:
        block_indices = flat_tokens(block_indices)
    block_indices = block_indices.to(torch.int32).contiguous()
    o = NSASelectionFunction.apply(qf, kf, vf, block_indices, counts, tables, scale)
    # the gate mix: one elementwise pass per branch (addcmul: the gated add in one pass, forward and backward)
    if g_slc is not None:
        o = o * flat_tokens(g_slc).unsqueeze(-1)
    if o_cmp is not None:
        o = torch.addcmul(o, o_cmp, flat_tokens(g_cmp).unsqueeze(-1))
    o = o.view(B, TQ, HQ, V)
    if window_size > 0:
        o = torch.addcmul(o, _swa(q, k, v, window_size, scale, cu_seqlens, tables), g_swa.unsqueeze(-1))
    return o.to(q.dtype)


def _nsa_torch(q, k, v, g_cmp, g_slc, g_swa, block_indices, block_counts, block_size, window_size, scale, cu_seqlens):
    return naive_nsa(
        q, k, v, g_cmp, g_slc, g_swa, block_indices, block_counts, block_size, window_size, scale, cu_seqlens
    )  # fmt: skip


def parallel_nsa(
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
    cu_seqlens: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Native sparse attention (fla 0.6.0's ``parallel_nsa``): ``o = g_cmp o_cmp + g_slc o_slc + g_swa o_swa``.

    * ``o_cmp``: attention over the mean-pooled key/value blocks of ``block_size`` tokens that are complete
      before the query;
    * ``o_slc``: attention over the keys (up to the query) of the blocks in ``block_indices``; when those are not
      given, the ``block_counts`` blocks whose compressed-attention probabilities, summed over the query heads of
      a key/value group, are largest (the first block, the query's block and the one before it always taken);
    * ``o_swa``: causal attention over the last ``window_size`` keys (``window_size = 0``: no such branch).

    Args:
        q: ``[B, TQ, HQ, K]``; k: ``[B, TK, H, K]``; v: ``[B, TK, H, V]`` (``H`` divides ``HQ``; ``TQ <= TK``, the
            queries being the last ``TQ`` positions, e.g. decoding after a cache).
        g_cmp, g_slc, g_swa: ``[B, TQ, HQ]`` branch gates (``None``: branch off, for ``g_slc``: weight 1).
        block_indices: ``[B, TQ, H, S]`` int blocks to attend to (overrides the computed selection).
        block_counts: int, or ``[B, TQ, H]`` int blocks per query.
        block_size: tokens per block; window_size: sliding window (0: none); scale: default ``K ** -0.5``.
        cu_seqlens: ``[N+1]`` packed bounds, or ``(cu_seqlens_q, cu_seqlens_k)`` (then ``B == 1``).
    Returns:
        ``o [B, TQ, HQ, V]`` in ``q.dtype``. Gradients reach q, k, v and the gates (not through the selection).
    """
    window_size = 0 if window_size is None else window_size
    gates = {"g_cmp": g_cmp, "g_slc": g_slc, "g_swa": g_swa}
    check_nsa_inputs(q, k, v, gates, block_indices, block_counts, block_size, window_size, cu_seqlens)
    scale = k.shape[-1] ** -0.5 if scale is None else float(scale)
    args = (q, k, v, g_cmp, g_slc, g_swa, block_indices, block_counts, block_size, window_size, scale, cu_seqlens)
    return dispatch((q, k, v, g_cmp, g_slc, g_swa), _nsa_torch, _nsa_triton, *args)


def parallel_nsa_topk(
    q: torch.Tensor,
    k: torch.Tensor,
    TK: int,
    lse: torch.Tensor | None,
    block_counts: torch.Tensor | int,
    block_size: int = 64,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Top-k block selection alone (fla 0.6.0's): q ``[B, TQ, HQ, K]``, block means ``k [B, TC, H, K]``, the
    compressed branch's ``lse [B, TQ, HQ]`` (``None``: computed) -> ``[B, TQ, H, S]`` int32, ``-1`` padded."""
    check_branch_inputs(q, k, k, TK, block_size, cu_seqlens)
    B, TQ, HQ, K = q.shape
    H = k.shape[2]
    scale = K**-0.5 if scale is None else float(scale)
    tables = build_tables(B, TQ, TK, block_size, cu_seqlens, q.device)
    kc = flat_tokens(k)
    if kc.shape[0] != tables.num_blocks:
        raise ValueError(f"k has {kc.shape[0]} blocks in all, expected {tables.num_blocks} for TK={TK}")
    if lse is None:
        lse = NSACompressionFunction.apply(flat_tokens(q).detach(), kc.detach(), kc.detach(), tables, scale)[1]
    else:
        lse = flat_tokens(lse).float()
    counts = None if isinstance(block_counts, int) else flat_tokens(block_counts)
    S = block_counts if counts is None else int(block_counts.max())
    return select_blocks(flat_tokens(q), kc, lse, tables, S, counts, scale).view(B, TQ, H, S)


__all__ = ["parallel_nsa", "parallel_nsa_compression", "parallel_nsa_topk", "select_blocks"]
