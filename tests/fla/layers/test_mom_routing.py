"""MoM's routing and per-memory packing (fla/layers/mom_routing.py): plain PyTorch, checked against loops."""

import pytest
import torch

from fla.layers.mom_routing import gather_states, pack_by_memory, route, scatter_states, token_documents, unpack
from tests.harness import DEVICE, assert_close, tol


def cu(*lens):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def random_memories(n, topk, num_memories, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_memories, generator=g)[:topk] for _ in range(n)]).to(DEVICE)


def expected_segments(memories, cu_seqlens, num_memories):
    """Loop version: [(memory, doc, [tokens in order])] for every non-empty pair, memory-major."""
    out = []
    bounds = cu_seqlens.tolist()
    for e in range(num_memories):
        for d in range(len(bounds) - 1):
            toks = [t for t in range(bounds[d], bounds[d + 1]) if e in memories[t].tolist()]
            if toks:
                out.append((e, d, toks))
    return out


def test_route_is_softmax_topk_renormalized():
    logits = torch.randn(9, 5, dtype=torch.float64, device=DEVICE)
    weights, memories = route(logits, 2)
    probs = logits.softmax(-1)
    for n in range(9):
        top = probs[n].argsort(descending=True)[:2]
        assert memories[n].tolist() == top.tolist()
        assert_close(f"weights {n}", probs[n, top] / probs[n, top].sum(), weights[n], tol(torch.float32, 10))
    assert weights.dtype == torch.float64 and memories.dtype == torch.int64
    w16, _ = route(logits.half(), 3)
    assert w16.dtype == torch.float16
    with pytest.raises(ValueError, match="topk=6 must be in 1 .. num_memories=5"):
        route(logits, 6)


@pytest.mark.parametrize(
    "lens, topk, num_memories",
    [((7,), 2, 4), ((5, 1, 9, 1), 2, 3), ((4, 0, 6), 1, 5), ((1,), 3, 3), ((13, 2), 1, 1)],
    ids=["one_doc", "len1_docs", "empty_doc", "len1_all_memories", "one_memory"],
)
def test_pack_matches_loop_and_never_crosses_documents(lens, topk, num_memories):
    boundaries = cu(*lens)
    n = sum(lens)
    memories = random_memories(n, topk, num_memories, seed=sum(lens))
    packing = pack_by_memory(memories, boundaries, num_memories)
    segments = expected_segments(memories, boundaries, num_memories)
    assert packing.cu_seqlens.tolist() == [0, *torch.tensor([len(s[2]) for s in segments]).cumsum(0).tolist()]
    assert packing.seg_memory.tolist() == [s[0] for s in segments]
    assert packing.seg_doc.tolist() == [s[1] for s in segments]
    tokens = packing.tokens.tolist()
    for i, (e, d, toks) in enumerate(segments):
        a, b = packing.cu_seqlens[i : i + 2].tolist()
        assert tokens[a:b] == toks, f"segment {i} (memory {e}, doc {d})"
        copies = packing.order[a:b]
        assert (memories.reshape(-1)[copies] == e).all()  # each copy is the token's choice of this memory
    # each memory's tokens are one contiguous packed range
    offsets = packing.memory_offsets
    assert offsets[0] == 0 and offsets[-1] == n * topk and len(offsets) == num_memories + 1
    for e in range(num_memories):
        assert (
            packing.seg_memory[(packing.cu_seqlens[:-1] >= offsets[e]) & (packing.cu_seqlens[:-1] < offsets[e + 1])]
            == e
        ).all()
        expected = sum(len(s[2]) for s in segments if s[0] == e)
        assert offsets[e + 1] - offsets[e] == expected


def test_empty_memory_gets_no_segment():
    memories = torch.tensor([[0], [2], [0], [2]], device=DEVICE)
    packing = pack_by_memory(memories, cu(4), 4)
    assert packing.memory_offsets == [0, 2, 2, 4, 4]
    assert packing.seg_memory.tolist() == [0, 2] and packing.cu_seqlens.tolist() == [0, 2, 4]


def test_capacity_rule_is_fla_no_drop():
    """fla 0.6.0 keeps every routed token whatever its capacity: all tokens to one memory stay in one segment."""
    memories = torch.zeros(50, 1, dtype=torch.long, device=DEVICE)
    packing = pack_by_memory(memories, cu(50), 8)
    assert packing.cu_seqlens.tolist() == [0, 50] and packing.tokens.tolist() == list(range(50))


def test_unpack_round_trip_and_weighting():
    lens, topk, M = (6, 1, 8), 3, 5
    memories = random_memories(sum(lens), topk, M, seed=3)
    packing = pack_by_memory(memories, cu(*lens), M)
    x = torch.randn(sum(lens), 4, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weights = torch.rand(sum(lens), topk, dtype=torch.float64, device=DEVICE)
    out = unpack(x[packing.tokens], packing, weights)
    assert_close("weighted sum", x * weights.sum(1)[:, None, None], out, tol(torch.float64))
    # a per-copy payload comes back to its own (token, slot)
    copy_ids = torch.arange(sum(lens) * topk, device=DEVICE, dtype=torch.float64)
    back = unpack(
        copy_ids[packing.order], packing, torch.eye(topk, dtype=torch.float64, device=DEVICE)[[0] * sum(lens)]
    )
    assert back.tolist() == (torch.arange(sum(lens), device=DEVICE) * topk).double().tolist()
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert_close("grad", weights.sum(1)[:, None, None].expand_as(x), gx, tol(torch.float64))


def test_states_gather_scatter():
    memories = torch.tensor([[1], [1], [3], [0]], device=DEVICE)
    packing = pack_by_memory(memories, cu(2, 2), 4)  # segments: (0, doc 1), (1, doc 0), (3, doc 1)
    states = torch.randn(2, 4, 3, device=DEVICE)
    got = gather_states(states, packing)
    assert torch.equal(got, states[[1, 0, 1], [0, 1, 3]])
    final = torch.randn(3, 3, device=DEVICE)
    new = scatter_states(states, final, packing, 2, 4)
    expected = states.clone()
    expected[[1, 0, 1], [0, 1, 3]] = final
    assert torch.equal(new, expected), "untouched (doc, memory) pairs keep their state"
    assert torch.equal(scatter_states(None, final, packing, 2, 4)[0, 0], torch.zeros(3, device=DEVICE))
    assert gather_states(None, packing) is None


def test_token_documents_and_bad_input():
    assert token_documents(cu(2, 0, 1)).tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="cu_seqlens ends at 5, expected the token count 4"):
        pack_by_memory(torch.zeros(4, 1, dtype=torch.long, device=DEVICE), cu(5), 2)
