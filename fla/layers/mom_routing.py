"""Token routing of the mixture-of-memories layer (:class:`fla.layers.mom.MomAttention`), in plain PyTorch.

Every token picks its ``topk`` memories (:func:`route`); the tokens routed to one memory form, per
document, one sequence of that memory, in their original order. All those sequences are packed into
one varlen batch (:func:`pack_by_memory`), memory-major. With ``topk = 1``, 3 memories and two
documents ``a b c | d e`` routed to memories ``0 2 0 | 2 2``, the packed batch is::

    (memory 0, doc 0) = a c | (memory 2, doc 0) = b | (memory 2, doc 1) = d e

so each memory's tokens are one contiguous range of the packed batch (its per-memory projections
run once on it) and every segment lies inside one document (a memory's recurrence never crosses a
document boundary). Empty (memory, document) pairs get no segment. :func:`unpack` brings each routed
copy back to its token and sums the ``topk`` copies weighted by the routing scores.

Capacity: fla 0.6.0 keeps a ``capacity`` field but never drops a token (its per-memory sequences
are as long as the tokens routed there), and neither does this; the field is accepted and unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def route(router_logits: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing: ``router_logits [N, M]`` -> ``(weights [N, topk], memories [N, topk])``.

    Softmax over the ``M`` memories in float32, the ``topk`` largest scores, renormalized to sum to 1
    per token and cast back to the logits' dtype (fla's rule). ``memories`` are int64 indices.
    """
    num_memories = router_logits.shape[-1]
    if not 1 <= topk <= num_memories:
        raise ValueError(f"route: topk={topk} must be in 1 .. num_memories={num_memories}")
    scores = F.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, memories = torch.topk(scores, topk, dim=-1)
    weights = weights / weights.sum(-1, keepdim=True)
    return weights.to(router_logits.dtype), memories


@dataclass
class MemoryPacking:
    """Where every routed copy of a token sits in the packed per-memory batch.

    A routed copy is ``c = token * topk + slot`` (``slot``: the token's ``slot``-th choice).

    Attributes:
        order: ``[N * topk]`` int64: the packed position ``p`` holds the copy ``order[p]``.
        cu_seqlens: ``[S + 1]`` int64 boundaries of the ``S`` non-empty (memory, document) segments.
        seg_memory, seg_doc: ``[S]`` int64: each segment's memory and document.
        memory_offsets: ``M + 1`` host ints: memory ``e``'s tokens are the packed range
            ``memory_offsets[e] : memory_offsets[e + 1]``.
        topk: copies per token.
    """

    order: torch.Tensor
    cu_seqlens: torch.Tensor
    seg_memory: torch.Tensor
    seg_doc: torch.Tensor
    memory_offsets: list[int]
    topk: int

    @property
    def tokens(self) -> torch.Tensor:
        """``[N * topk]``: the token each packed position holds."""
        return self.order // self.topk


def token_documents(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """``cu_seqlens [D + 1]`` -> ``[cu_seqlens[-1]]`` int64: the document of every token (empty documents allowed)."""
    cu = cu_seqlens.long()
    return torch.repeat_interleave(torch.arange(cu.numel() - 1, device=cu.device), cu[1:] - cu[:-1])


def pack_by_memory(memories: torch.Tensor, cu_seqlens: torch.Tensor, num_memories: int) -> MemoryPacking:
    """Group the routed copies by (memory, document), keeping token order inside each group.

    Args:
        memories: ``[N, topk]`` int memory indices of the ``N`` tokens (distinct per token).
        cu_seqlens: ``[D + 1]`` document boundaries of the ``N`` tokens (``[0, N]``: one document).
        num_memories: ``M``; every index must lie in ``0 .. M - 1``.
    Returns:
        the :class:`MemoryPacking`. Two host syncs: the documents' sizes and the groups' sizes.
    """
    N, topk = memories.shape
    num_docs = cu_seqlens.numel() - 1
    doc = token_documents(cu_seqlens)
    if doc.numel() != N:
        raise ValueError(f"pack_by_memory: cu_seqlens ends at {doc.numel()}, expected the token count {N}")
    key = memories.reshape(-1).long() * num_docs + doc.repeat_interleave(topk)  # (memory, document) of each copy
    # stable: copies of one group keep increasing copy index (= token * topk + slot), i.e. their tokens' order
    order = torch.sort(key, stable=True).indices
    counts = torch.zeros(num_memories * num_docs, dtype=torch.long, device=key.device)
    counts = counts.scatter_add(0, key, torch.ones_like(key)).tolist()  # sizes of the groups, memory-major
    segments = [i for i, c in enumerate(counts) if c]  # the non-empty groups
    sizes = [counts[i] for i in segments]
    offsets = [0]
    for e in range(num_memories):
        offsets.append(offsets[-1] + sum(counts[e * num_docs : (e + 1) * num_docs]))
    device = memories.device
    cu = F.pad(torch.tensor(sizes, dtype=torch.long).cumsum(0), (1, 0)).to(device)
    segments = torch.tensor(segments, dtype=torch.long).to(device)
    return MemoryPacking(order, cu, segments // num_docs, segments % num_docs, offsets, topk)


def unpack(packed: torch.Tensor, packing: MemoryPacking, weights: torch.Tensor) -> torch.Tensor:
    """Scatter back and mix: ``packed [N * topk, ...]`` (packed order) -> ``[N, ...]``.

    Token ``n``'s output is ``sum_slot weights[n, slot] * packed[position of copy (n, slot)]``.
    """
    inverse = torch.empty_like(packing.order)
    inverse[packing.order] = torch.arange(packing.order.numel(), device=inverse.device)
    copies = packed[inverse].unflatten(0, weights.shape)  # [N, topk, ...] in copy order
    w = weights.to(packed.dtype).reshape(*weights.shape, *([1] * (packed.dim() - 1)))
    return (copies * w).sum(1)


def gather_states(states: torch.Tensor | None, packing: MemoryPacking) -> torch.Tensor | None:
    """Per-segment initial states from per-(document, memory) ones: ``[D, M, ...]`` -> ``[S, ...]``."""
    return None if states is None else states[packing.seg_doc, packing.seg_memory]


def scatter_states(
    states: torch.Tensor | None, final: torch.Tensor, packing: MemoryPacking, num_docs: int, num_memories: int
) -> torch.Tensor:
    """Write the segments' final states ``[S, ...]`` into per-(document, memory) states ``[D, M, ...]``.

    Pairs without a segment keep their state (zeros when ``states`` is ``None``): a memory no token
    of a document was routed to is left untouched.
    """
    if states is None:
        states = final.new_zeros(num_docs, num_memories, *final.shape[1:])
    return states.index_put((packing.seg_doc, packing.seg_memory), final.to(states.dtype))


__all__ = ["MemoryPacking", "gather_states", "pack_by_memory", "route", "scatter_states", "token_documents", "unpack"]
