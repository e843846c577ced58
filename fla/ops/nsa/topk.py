"""NSA's top-k block selection in one Triton kernel: scores, importance, ranking and the ``[NQ, H, S]`` table.

One program per (query, key/value head). It scores every block of the query's sequence against the group's
``G`` query heads (``[BG, BK] x [BK, BC]`` products over the head dim), turns them into the compressed branch's
probabilities ``p = exp(scale s - lse)``, sums them over the group into the importance of each block, applies the
forced and excluded blocks (:func:`fla.ops.nsa.naive.rank_blocks`: blocks ``0``, ``cur - 1``, ``cur`` get ``G``;
blocks after the query's block ``cur`` are out) and ranks the blocks with one ``tl.sort`` of int64 keys
``(importance bits + 1) << 32 | block``: the float bits of a non-negative importance order as the floats do, and
equal importances rank the later block first, the torch path's tie rule. Excluded blocks keep keys below
``2^32`` and come out as ``-1``, as do the slots past a query's block count.

The torch path (:func:`fla.ops.nsa.parallel.select_blocks_torch`) materializes the ``[queries, heads, blocks]``
probabilities and runs about ten passes over them plus a stable sort; here nothing but the table reaches memory.
Sequences of more than :data:`MAX_BLOCKS` blocks (the ``[BG, BC]`` scores and the sort live in registers) stay on
the torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.tuning import autotune_configs, dot_precision, given_heuristics
from fla.ops.nsa.index import NSATables
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2

MAX_BLOCKS = 1024  # most blocks per sequence the kernel ranks (a power of two)
LOG2E = tl.constexpr(1.4426950408889634)


@lean_launch
@given_heuristics(HAS_COUNTS="counts")
@triton.autotune(configs=autotune_configs(warps=(4, 8), stages=(1,)), key=["G", "K", "BC", "S"])
@triton.jit
def nsa_topk_kernel(
    q,
    kc,
    lse,
    tok_pos,
    tok_boc,
    counts,
    out,
    scale,
    HQ: tl.constexpr,
    H: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    BS: tl.constexpr,
    S: tl.constexpr,
    BG: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    BSL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    HAS_COUNTS: tl.constexpr,
):
    """Query ``program_id(0)``, key/value head ``program_id(1)``: ``out [NQ, H, S]`` int32 block indices (within
    the query's sequence), highest importance first, ``-1`` padded. ``q [NQ, HQ, K]``, ``kc [NB, H, K]`` (block
    means, global blocks), ``lse [NQ, HQ]`` (float32, natural log), ``tok_pos / tok_boc [NQ]`` (position, first
    global block of the sequence), ``counts [NQ, H]`` (slots to keep, with ``HAS_COUNTS``)."""
    scale = tl.cast(scale, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_q, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    cur = tl.load(tok_pos + i_q) // BS  # the query's own block
    boc = tl.load(tok_boc + i_q).to(tl.int64)
    o_g = tl.arange(0, BG)
    m_g = o_g < G
    o_c = tl.arange(0, BC)
    m_c = o_c < cur  # scored blocks: complete, before the query's block
    p_kc = kc + ((boc + o_c) * H + i_h) * K  # [BC] rows of the sequence's blocks
    p_q = q + (i_q * HQ + i_h * G + o_g) * K  # [BG] rows of the group's query heads
    b_s = tl.zeros([BG, BC], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        b_q = tl.load(p_q[:, None] + o_k[None, :], mask=m_g[:, None] & m_k[None, :], other=0.0)  # [BG, BK]
        b_kc = tl.load(p_kc[None, :] + o_k[:, None], mask=m_k[:, None] & m_c[None, :], other=0.0)  # [BK, BC]
        b_s += tl.dot(b_q, b_kc.to(b_q.dtype), input_precision=DOT_PRECISION)
    b_lse = tl.load(lse + i_q * HQ + i_h * G + o_g, mask=m_g, other=0.0)  # [BG]
    b_p = tl.exp2((b_s * scale - b_lse[:, None]) * LOG2E)
    b_imp = tl.sum(tl.where(m_g[:, None] & m_c[None, :], b_p, 0.0), axis=0)  # [BC]
    b_imp = tl.where((o_c == 0) | (o_c == cur) | (o_c == cur - 1), G * 1.0, b_imp)
    # int64 keys: importance bits + 1 (>= 1 for a taken block) above, the block below; excluded blocks: the block
    b_bits = (b_imp.to(tl.int32, bitcast=True) + 1).to(tl.int64)
    b_key = tl.where(o_c <= cur, (b_bits << 32) | o_c.to(tl.int64), o_c.to(tl.int64))
    b_key = tl.sort(b_key, descending=True)
    b_idx = tl.where(b_key >= (1 << 32), (b_key & 0xFFFFFFFF).to(tl.int32), -1)  # [BC] ranked blocks
    if HAS_COUNTS:
        b_idx = tl.where(o_c < tl.load(counts + i_q * H + i_h), b_idx, -1)
    p_out = out + (i_q * H + i_h) * S
    tl.store(p_out + o_c, b_idx, mask=o_c < S)
    if S > BC:  # more slots than blocks: the rest stay empty
        o_r = tl.arange(0, BSL)
        tl.store(p_out + o_r, tl.full([BSL], -1, tl.int32), mask=(o_r >= BC) & (o_r < S))


def topk_fits(tables: NSATables) -> bool:
    """Whether the kernel ranks this call's blocks (at most :data:`MAX_BLOCKS` per sequence)."""
    return max(tables.max_blocks, 1) <= MAX_BLOCKS


def select_blocks_triton(
    q: torch.Tensor,
    kc: torch.Tensor,
    lse: torch.Tensor,
    tables: NSATables,
    S: int,
    block_counts: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """:func:`fla.ops.nsa.parallel.select_blocks` in one kernel: flat queries ``q [NQ, HQ, K]``, block means
    ``kc [NB, H, K]``, the compressed branch's ``lse [NQ, HQ]`` (float32), ``block_counts [NQ, H]`` int32 or
    ``None`` -> ``[NQ, H, S]`` int32. Needs :func:`topk_fits`."""
    NQ, HQ, K = q.shape
    H = kc.shape[1]
    G = HQ // H
    out = torch.empty(NQ, H, S, dtype=torch.int32, device=q.device)
    if NQ == 0 or S == 0:
        return out
    BC = max(16, next_power_of_2(max(tables.max_blocks, 1)))
    BK = max(16, min(64 if BC <= 256 else 32, next_power_of_2(K)))
    counts = None if block_counts is None else block_counts.to(torch.int32).contiguous()
    nsa_topk_kernel[(NQ, H)](
        q.contiguous(), kc.contiguous(), lse.float().contiguous(), tables.tok_pos, tables.tok_boc, counts, out,
        scale, HQ=HQ, H=H, G=G, K=K, BS=tables.block_size, S=S,
        BG=max(16, next_power_of_2(G)), BK=BK, BC=BC, BSL=next_power_of_2(S), DOT_PRECISION=dot_precision(q.dtype),
    )  # fmt: skip
    return out


__all__ = ["MAX_BLOCKS", "nsa_topk_kernel", "select_blocks_triton", "topk_fits"]
