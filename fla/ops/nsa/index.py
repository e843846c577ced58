"""Index tables of the NSA kernels: every query and every key block located in the flat (packed) token layout.

The kernels see ``q`` as ``[NQ, HQ, K]`` and ``k``, ``v`` as ``[NK, H, *]`` (``NQ = B * TQ``, ``NK = B * TK``, or the
packed totals with ``cu_seqlens``); each sequence's keys are cut into blocks of ``block_size`` tokens, numbered
globally (sequence ``n`` owns blocks ``[boc_n, boc_n + ceil(len_n / block_size))``). The queries of a sequence are
its last ``TQ_n`` key positions (``TQ_n < TK_n`` only when decoding after a cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fla.utils.tensors import last_call_cache


@dataclass(frozen=True)
class NSATables:
    """Flat-layout tables (all int32 unless noted) for one call.

    Attributes:
        block_size: tokens per block ``BS``.
        num_blocks: total blocks ``NB`` over all sequences.
        max_blocks: blocks of the longest sequence.
        tok_bos: ``[NQ]`` flat index of the first key of the query's sequence.
        tok_pos: ``[NQ]`` position of the query among its sequence's keys.
        tok_boc: ``[NQ]`` global index of the first block of the query's sequence.
        key_blk: ``[NK]`` int64 global block of each key token (mean pooling).
        blk_start: ``[NB]`` flat index of each block's first key.
        blk_end: ``[NB]`` flat index one past each block's last key.
        blk_first_q: ``[NB]`` flat index of the first query that sees the block compressed (training layout).
        blk_seq_end: ``[NB]`` flat index one past the last token of the block's sequence.
        same_layout: queries and keys are the same tokens (``TQ == TK`` everywhere): backward is possible.
        dense_rows: without ``cu_seqlens``, the batch rows ``B`` (row ``b``'s queries are ``[b TQ, (b + 1) TQ)``,
            its blocks ``[b max_blocks, (b + 1) max_blocks)``); 0 for packed sequences.
    """

    block_size: int
    num_blocks: int
    max_blocks: int
    tok_bos: torch.Tensor
    tok_pos: torch.Tensor
    tok_boc: torch.Tensor
    key_blk: torch.Tensor
    blk_start: torch.Tensor
    blk_end: torch.Tensor
    blk_first_q: torch.Tensor
    blk_seq_end: torch.Tensor
    same_layout: bool
    dense_rows: int = 0


def split_cu_seqlens(cu_seqlens) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``cu_seqlens`` (one tensor, or fla's ``(cu_seqlens_q, cu_seqlens_k)`` tuple) -> ``(cu_q, cu_k)``."""
    if cu_seqlens is None:
        return None, None
    if isinstance(cu_seqlens, (tuple, list)):
        return cu_seqlens[0], cu_seqlens[1]
    return cu_seqlens, cu_seqlens


def build_tables(B: int, TQ: int, TK: int, block_size: int, cu_seqlens, device: torch.device) -> NSATables:
    """Tables for q ``[B, TQ, ...]`` and k ``[B, TK, ...]`` (``B == 1`` with ``cu_seqlens``).

    Without ``cu_seqlens`` they follow from the shapes (no device sync); with one ``cu_seqlens`` tensor they are
    built once for the layers of a forward (memoized on the tensor)."""
    cu_q, cu_k = split_cu_seqlens(cu_seqlens)
    if cu_q is None:
        return _dense_tables(B, TQ, TK, block_size, torch.device(device))
    if cu_q is cu_k:
        return _varlen_tables_memo(cu_q, block_size)
    return _varlen_tables(cu_q, cu_k, block_size)


def _dense_tables(B: int, TQ: int, TK: int, block_size: int, device: torch.device) -> NSATables:
    """Every sequence has ``TK`` keys and its last ``TQ`` positions as queries."""
    nblk = -(-TK // block_size)
    i32 = dict(dtype=torch.int32, device=device)
    b_q = torch.arange(B * TQ, device=device) // max(TQ, 1)
    blocks = torch.arange(B * nblk, device=device)
    blk_start = (blocks // nblk) * TK + (blocks % nblk) * block_size
    seq_end = (blocks // nblk + 1) * TK
    keys = torch.arange(B * TK, device=device)
    return NSATables(
        block_size=block_size,
        num_blocks=B * nblk,
        max_blocks=nblk,
        tok_bos=(b_q * TK).to(**i32),
        tok_pos=(TK - TQ + torch.arange(B * TQ, device=device) % max(TQ, 1)).to(**i32),
        tok_boc=(b_q * nblk).to(**i32),
        key_blk=(keys // TK) * nblk + (keys % TK) // block_size,
        blk_start=blk_start.to(**i32),
        blk_end=torch.minimum(blk_start + block_size, seq_end).to(**i32),
        blk_first_q=(blk_start + block_size - 1).to(**i32),
        blk_seq_end=seq_end.to(**i32),
        same_layout=TQ == TK,
        dense_rows=B,
    )


@last_call_cache
def _varlen_tables_memo(cu_seqlens: torch.Tensor, block_size: int) -> NSATables:
    return _varlen_tables(cu_seqlens, cu_seqlens, block_size)


def _varlen_tables(cu_q: torch.Tensor, cu_k: torch.Tensor, block_size: int) -> NSATables:
    """Packed sequences: ``cu_q`` / ``cu_k`` ``[N+1]`` bound each sequence's queries and keys."""
    device = cu_q.device
    cu_q, cu_k = cu_q.to(device=device, dtype=torch.long), cu_k.to(device=device, dtype=torch.long)
    lens_q, lens_k = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]
    nblk = (lens_k + block_size - 1) // block_size
    boc = torch.cat([nblk.new_zeros(1), torch.cumsum(nblk, 0)])
    num_blocks, N = int(boc[-1]), lens_q.numel()
    seq_ids = torch.arange(N, device=device)

    q_seq = torch.repeat_interleave(seq_ids, lens_q, output_size=int(cu_q[-1]))
    q_local = torch.arange(q_seq.numel(), device=device) - cu_q[:-1][q_seq]
    tok_pos = (lens_k - lens_q)[q_seq] + q_local

    k_seq = torch.repeat_interleave(seq_ids, lens_k, output_size=int(cu_k[-1]))
    k_local = torch.arange(k_seq.numel(), device=device) - cu_k[:-1][k_seq]
    key_blk = boc[:-1][k_seq] + k_local // block_size

    b_seq = torch.repeat_interleave(seq_ids, nblk, output_size=num_blocks)
    b_local = torch.arange(num_blocks, device=device) - boc[:-1][b_seq]
    blk_start = cu_k[:-1][b_seq] + b_local * block_size
    blk_seq_end = cu_k[1:][b_seq]
    blk_end = torch.minimum(blk_start + block_size, blk_seq_end)
    i32 = torch.int32
    return NSATables(
        block_size=block_size,
        num_blocks=num_blocks,
        max_blocks=int(nblk.max()) if N else 0,
        tok_bos=cu_k[:-1][q_seq].to(i32),
        tok_pos=tok_pos.to(i32),
        tok_boc=boc[:-1][q_seq].to(i32),
        key_blk=key_blk,
        blk_start=blk_start.to(i32),
        blk_end=blk_end.to(i32),
        blk_first_q=(blk_start + block_size - 1).to(i32),
        blk_seq_end=blk_seq_end.to(i32),
        same_layout=bool(torch.equal(lens_q, lens_k)),
    )


def flat_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...]`` -> ``[B * T, ...]`` (the flat layout of the kernels; a view when possible)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def mean_pooling(x: torch.Tensor, tables: NSATables) -> torch.Tensor:
    """Block means (differentiable): ``x [NK, H, D]`` -> ``[NB, H, D]``; a sequence's last, shorter block is the
    mean of the tokens it has (fla's ``mean_pooling``)."""
    out = x.new_zeros(tables.num_blocks, *x.shape[1:], dtype=torch.float32 if x.dtype != torch.float64 else x.dtype)
    out = out.index_add(0, tables.key_blk, x.to(out.dtype))
    count = (tables.blk_end - tables.blk_start).to(out.dtype)
    return (out / count.view(-1, *([1] * (x.dim() - 1)))).to(x.dtype)


__all__ = ["NSATables", "build_tables", "flat_tokens", "mean_pooling", "split_cu_seqlens"]
