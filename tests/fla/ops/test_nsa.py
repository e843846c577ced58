"""parallel_nsa (Triton under the interpreter on CPU, and the torch path) against a float64 step-by-step reference."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fla.ops.nsa import (
    naive_nsa,
    naive_nsa_compression,
    naive_nsa_selection,
    naive_nsa_topk,
    parallel_nsa,
    parallel_nsa_compression,
    parallel_nsa_topk,
)
from fla.ops.nsa.index import _varlen_tables, build_tables
from tests.fla.models.families import FLA060_PATH
from tests.harness import BACKENDS, DEVICE, assert_close, tol, using


def step_by_step(q, k, v, gates, block_counts, block_size, window_size, scale, lengths=None, block_indices=None):
    """One query and head at a time, in float64: the three branches as in README.md (forward only).

    ``lengths``: packed sequence lengths (``B == 1``); ``block_indices [B, T, H, S]`` overrides the selection."""
    B, T, HQ, K = q.shape
    H, BS = k.shape[2], block_size
    G = HQ // H
    q, k, v = q.double(), k.double(), v.double()
    gates = [None if g is None else g.double() for g in gates]
    o = torch.zeros(B, T, HQ, v.shape[-1], dtype=torch.float64)
    spans = [(b, 0, T) for b in range(B)] if lengths is None else []
    start = 0
    for n in lengths or []:
        spans.append((0, start, start + n))
        start += n
    for b, a, e in spans:
        ks, vs = k[b, a:e], v[b, a:e]
        nblk = math.ceil((e - a) / BS)
        kc = torch.stack([ks[c * BS : (c + 1) * BS].mean(0) for c in range(nblk)])
        vc = torch.stack([vs[c * BS : (c + 1) * BS].mean(0) for c in range(nblk)])
        for t in range(e - a):
            cur = t // BS
            visible = [c for c in range(nblk) if (c + 1) * BS - 1 <= t]
            probs = torch.zeros(HQ, nblk, dtype=torch.float64)
            for hq in range(HQ):
                h = hq // G
                qi = q[b, a + t, hq]
                acc = 0.0
                if visible:
                    s = torch.stack([scale * qi @ kc[c, h] for c in visible])
                    p = torch.softmax(s, 0)
                    probs[hq, visible] = p
                    acc = sum(p[i] * vc[c, h] for i, c in enumerate(visible))
                if gates[0] is not None:
                    o[b, a + t, hq] += gates[0][b, a + t, hq] * acc
            for h in range(H):
                if block_indices is not None:
                    chosen = [c for c in block_indices[b, a + t, h].tolist() if 0 <= c <= cur]
                else:
                    score = {c: float(probs[h * G : (h + 1) * G, c].sum()) for c in range(cur)}
                    for c in (0, cur - 1, cur):
                        if c >= 0:
                            score[c] = float(G)
                    ranked = sorted(score, key=lambda c: (-score[c], -c))  # ties: the later block
                    n = block_counts if isinstance(block_counts, int) else int(block_counts[b, a + t, h])
                    chosen = ranked[:n]
                keys = sorted(j for c in chosen for j in range(c * BS, min((c + 1) * BS, t + 1)))
                window = [j for j in range(t + 1) if t - j < window_size]
                for hq in range(h * G, (h + 1) * G):
                    qi = q[b, a + t, hq]
                    for branch, js, g in ((1, keys, gates[1]), (2, window, gates[2])):
                        if branch == 2 and window_size == 0:
                            continue
                        p = torch.softmax(torch.stack([scale * qi @ ks[j, h] for j in js]), 0)
                        out = sum(p[i] * vs[j, h] for i, j in enumerate(js))
                        o[b, a + t, hq] += out if g is None else g[b, a + t, hq] * out
    return o


def make(B, T, HQ, H, K, V, dtype, requires_grad=True):
    x = [torch.randn(B, T, HQ, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)]
    x += [torch.rand(B, T, HQ) for _ in range(3)]
    return [t.to(DEVICE, dtype).requires_grad_(requires_grad) for t in x]


def check(backend, inputs, ratio, block_counts, block_size, window_size, scale=None, cu=None, lengths=None):
    """o against :func:`step_by_step`; every gradient (q, k, v, the three gates) against the float64 torch path."""
    q, k, v, *gates = inputs
    if window_size == 0:
        gates[2] = None
    kw = dict(block_counts=block_counts, block_size=block_size, window_size=window_size, scale=scale, cu_seqlens=cu)
    with using(backend):
        o = parallel_nsa(q, k, v, *gates, **kw)
    assert o.dtype == q.dtype and o.shape == (*q.shape[:3], v.shape[-1])
    sc = k.shape[-1] ** -0.5 if scale is None else scale
    ref = step_by_step(q, k, v, gates, block_counts, block_size, window_size, sc, lengths)
    assert_close("o", ref, o, ratio)
    named = {n: t for n, t in zip(("q", "k", "v", "g_cmp", "g_slc", "g_swa"), (q, k, v, *gates)) if t is not None}
    refs = {n: t.detach().double().requires_grad_() for n, t in named.items()}
    ref_gates = [refs.get(n) for n in ("g_cmp", "g_slc", "g_swa")]
    o_ref = naive_nsa(refs["q"], refs["k"], refs["v"], *ref_gates, **kw)
    assert_close("o (naive float64)", ref, o_ref, tol(torch.float64))
    do = torch.randn_like(o_ref)
    got = torch.autograd.grad(o, list(named.values()), do.to(o.dtype))
    want = torch.autograd.grad(o_ref, list(refs.values()), do)
    for name, a, b in zip(named, want, got):
        assert b.dtype == named[name].dtype, name
        assert_close(f"d{name}", a, b, ratio)


CASES = {
    # B, T, HQ, H, K, V, dtype, block_size, block_counts, window
    "gqa_window_odd_dims": (1, 37, 4, 2, 20, 12, torch.float32, 8, 3, 5),
    "fp16_mqa_two_blocks": (1, 30, 2, 1, 16, 16, torch.float16, 8, 2, 4),
    "odd_T63_wide_v_block12": (2, 63, 4, 1, 60, 36, torch.float32, 12, 2, 7),
    "T100_mha_no_window": (1, 100, 2, 2, 16, 20, torch.float32, 16, 3, 0),
    "one_token": (2, 1, 2, 1, 16, 16, torch.float32, 4, 2, 3),
}
FAST = {("triton", "gqa_window_odd_dims"), ("triton", "fp16_mqa_two_blocks"), ("torch", "gqa_window_odd_dims")}


@pytest.mark.parametrize(
    "backend, case",
    [pytest.param(b, c, marks=[] if (b, c) in FAST else [pytest.mark.slow]) for c in CASES for b in BACKENDS],
)
def test_parallel_nsa(backend, case):
    B, T, HQ, H, K, V, dtype, BS, S, W = CASES[case]
    torch.manual_seed(0)
    ratio = tol(dtype, 10 if dtype == torch.float32 else 3)
    check(backend, make(B, T, HQ, H, K, V, dtype), ratio, S, BS, W, scale=0.3 if case == "one_token" else None)


@pytest.mark.parametrize("backend", ["triton", pytest.param("torch", marks=pytest.mark.slow)])
def test_varlen_with_length_one_sequences(backend):
    torch.manual_seed(1)
    lengths = [1, 19, 1, 12]
    cu = torch.tensor([0, 1, 20, 21, 33], dtype=torch.int32, device=DEVICE)
    check(backend, make(1, 33, 4, 2, 16, 12, torch.float32), tol(torch.float32, 10), 2, 4, 3, cu=cu, lengths=lengths)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
def test_block_counts_per_query(backend):
    """``block_counts [B, T, H]``: each query and key/value head keeps its own number of top blocks."""
    torch.manual_seed(8)
    q, k, v, *gates = make(2, 27, 4, 2, 16, 16, torch.float32)
    counts = torch.randint(1, 5, (2, 27, 2), device=DEVICE)
    with using(backend):
        o = parallel_nsa(q, k, v, *gates, block_counts=counts, block_size=4, window_size=3)
    ref = step_by_step(q, k, v, gates, counts, 4, 3, 16**-0.5)
    assert_close("o", ref, o, tol(torch.float32, 10))
    do = torch.randn_like(o)
    (dq,) = torch.autograd.grad(o, q, do)
    q64 = q.detach().double().requires_grad_()
    o_ref = naive_nsa(
        q64, *(t.detach().double() for t in (k, v, *gates)), block_counts=counts, block_size=4, window_size=3
    )
    (dq_ref,) = torch.autograd.grad(o_ref, q64, do.double())
    assert_close("dq", dq_ref, dq, tol(torch.float32, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_given_block_indices_and_counts(backend):
    """Without ``g_cmp`` the given blocks are used as they are (``-1`` and future blocks skipped); ``block_counts``
    as a tensor keeps the first ``n`` of them per query and head."""
    torch.manual_seed(2)
    B, T, HQ, H, BS = 1, 24, 2, 1, 4
    q, k, v, _, g_slc, _ = make(B, T, HQ, H, 16, 16, torch.float32, requires_grad=False)
    cur = (torch.arange(T, device=DEVICE) // BS).view(1, T, 1).expand(B, T, H)  # the query's own block
    earlier = (torch.rand(B, T, H, device=DEVICE) * (cur + 1)).long() - 1  # -1 (skipped) .. cur - 1
    third = torch.where(earlier >= 1, earlier - 1, cur + 1)  # another earlier block, or a future one (skipped)
    idx = torch.stack([cur, earlier, third], -1)  # no block twice
    counts = torch.randint(1, 4, (B, T, H), device=DEVICE)
    with using(backend):
        o = parallel_nsa(q, k, v, None, g_slc, None, block_indices=idx, block_counts=counts, block_size=BS)
    kept = torch.where(torch.arange(3, device=DEVICE) < counts[..., None], idx, -1)
    ref = step_by_step(q, k, v, [None, g_slc, None], 3, BS, 0, 16**-0.5, block_indices=kept)
    assert_close("o", ref, o, tol(torch.float32, 10))
    plain = naive_nsa_selection(q.double(), k.double(), v.double(), kept, BS) * g_slc.double().unsqueeze(-1)
    assert_close("naive_nsa_selection", ref, plain, tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_queries_after_a_cached_prefix(backend):
    """Decoding: the last queries over all keys (``TQ < TK``, also as a ``(cu_seqlens_q, cu_seqlens_k)`` pair) give
    the last rows of the full call; the Triton backward refuses that layout."""
    torch.manual_seed(3)
    q, k, v, *g = make(2, 14, 2, 1, 16, 16, torch.float32, requires_grad=False)
    kw = dict(block_counts=2, block_size=4, window_size=5)
    with using(backend):
        full = parallel_nsa(q, k, v, *g, **kw)
        last = parallel_nsa(q[:, -3:], k, v, *(x[:, -3:] for x in g), **kw)
        assert_close("last rows", full[:, -3:], last, tol(torch.float32, 10))
        cu_q = torch.tensor([0, 3, 6], device=DEVICE)
        cu_k = torch.tensor([0, 14, 28], device=DEVICE)
        packed = parallel_nsa(
            q[:, -3:].reshape(1, 6, 2, 16), k.reshape(1, 28, 1, 16), v.reshape(1, 28, 1, 16),
            *(x[:, -3:].reshape(1, 6, 2) for x in g), **kw, cu_seqlens=(cu_q, cu_k),
        )  # fmt: skip
        assert_close("packed", last.reshape(1, 6, 2, 16), packed, tol(torch.float32, 10))
        if backend == "triton":
            qg = q[:, -3:].clone().requires_grad_()
            o = parallel_nsa(qg, k, v, *(x[:, -3:] for x in g), **kw)
            with pytest.raises(NotImplementedError, match="no cached prefix"):
                o.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_compression_and_topk_helpers(backend):
    """fla 0.6.0's branch helpers: ``parallel_nsa_compression`` and ``parallel_nsa_topk`` against the naive ones."""
    torch.manual_seed(4)
    BS, T = 4, 22
    q, k, v, *_ = make(1, T, 4, 2, 16, 16, torch.float32, requires_grad=False)
    TC = math.ceil(T / BS)
    kc = torch.stack([k[:, c * BS : (c + 1) * BS].mean(1) for c in range(TC)], 1)
    vc = torch.stack([v[:, c * BS : (c + 1) * BS].mean(1) for c in range(TC)], 1)
    o_ref, lse_ref = naive_nsa_compression(q.double(), kc.double(), vc.double(), BS, 0.25)
    idx_ref = naive_nsa_topk(q.double(), kc.double(), 3, BS, 0.25)
    with using(backend):
        o, lse = parallel_nsa_compression(q, kc, vc, T, BS, 0.25)
        idx = parallel_nsa_topk(q, kc, T, lse, 3, BS, 0.25)
    assert_close("o", o_ref, o, tol(torch.float32, 10))
    seen = torch.isfinite(lse_ref)
    assert_close("lse", lse_ref[seen], lse[seen], tol(torch.float32, 10))
    assert torch.equal(lse[~seen], torch.zeros_like(lse[~seen])), "no complete block yet: lse = 0 (fla)"
    assert torch.equal(idx.long(), idx_ref.long())


def test_errors_name_the_argument():
    q, k, v, g1, g2, g3 = make(1, 8, 4, 2, 16, 16, torch.float32, requires_grad=False)
    cases = [
        (dict(k=k[..., :8]), ValueError, "k has shape"),
        (dict(v=v[:, :4]), ValueError, "v has shape"),
        (dict(q=q[:, :, :3]), ValueError, "heads"),
        (dict(g_cmp=g1[..., None]), ValueError, "g_cmp has shape"),
        (dict(g_swa=None, window_size=4), ValueError, "needs the sliding-window gate g_swa"),
        (dict(g_cmp=None), ValueError, "block_indices is None and g_cmp is None"),
        (dict(block_size=0), ValueError, "block_size must be a positive integer, got 0"),
        (dict(block_counts=torch.ones(1, 8, 3, dtype=torch.long)), ValueError, "block_counts has shape"),
        (dict(block_counts=torch.ones(1, 8, 2)), ValueError, "block_counts has dtype torch.float32"),
        (dict(block_indices=torch.zeros(1, 8, 2, 2)), ValueError, "block_indices has dtype"),
        (dict(cu_seqlens=torch.tensor([0.0, 8.0])), TypeError, "cu_seqlens has dtype"),
        (dict(cu_seqlens=torch.tensor([0, 6, 5, 8])), ValueError, "non-decreasing"),
        (dict(cu_seqlens=torch.tensor([0, 7])), ValueError, "end at the token count 8"),
        (dict(q=torch.randn(1, 9, 4, 16)), ValueError, "q has 9 tokens but k only 8"),
    ]
    base = dict(q=q, k=k, v=v, g_cmp=g1, g_slc=g2, g_swa=g3, block_counts=2, block_size=4, window_size=2)
    for over, err, match in cases:
        args = {**base, **over}
        if "q" in over:
            args["g_cmp"] = args["g_slc"] = args["g_swa"] = None
            args["block_indices"] = torch.zeros(*args["q"].shape[:2], 2, 1, dtype=torch.long)
            args["window_size"] = 0
        with pytest.raises(err, match=match):
            parallel_nsa(**args)


def check_given_selection(lengths, HQ, H, K, dtype, block_size, block_counts, window_size):
    """The Triton path against the float64 torch path for the same blocks (the float64 selection; near-ties in
    low precision may pick other blocks, checked apart: almost every selected block agrees)."""
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    q, k, v, *gates = make(1, sum(lengths), HQ, H, K, K, dtype)
    kw = dict(block_size=block_size, window_size=window_size, cu_seqlens=cu)
    refs = [t.detach().double().requires_grad_() for t in (q, k, v, *gates)]
    kc64 = _block_means(refs[1].detach(), cu, block_size)
    idx = naive_nsa_topk(refs[0].detach(), kc64, block_counts, block_size, cu_seqlens=cu)
    with using("triton"):
        o = parallel_nsa(q, k, v, *gates, block_indices=idx, block_counts=block_counts, **kw)
        kc = _block_means(k, cu, block_size)
        chosen = parallel_nsa_topk(q, kc, k.shape[1], None, block_counts, block_size, cu_seqlens=cu)
    n = int(idx.max()) + 2
    ours = torch.zeros(*idx.shape[:-1], n, device=DEVICE).scatter_(-1, chosen.long() + 1, 1.0)[..., 1:]
    theirs = torch.zeros(*idx.shape[:-1], n, device=DEVICE).scatter_(-1, idx.long() + 1, 1.0)[..., 1:]
    agree = (ours * theirs).sum() / theirs.sum()
    assert agree > 0.99, f"only {agree:.3%} of the selected blocks agree with the float64 selection"
    o_ref = naive_nsa(*refs, block_indices=idx, block_counts=block_counts, **kw)
    ratio = tol(dtype, 10 if dtype == torch.float32 else 2)
    assert_close("o", o_ref, o, ratio)
    do = torch.randn_like(o_ref)
    got = torch.autograd.grad(o, [q, k, v, *gates], do.to(dtype))
    want = torch.autograd.grad(o_ref, refs, do)
    for name, a, b in zip(("q", "k", "v", "g_cmp", "g_slc", "g_swa"), want, got):
        assert_close(f"d{name}", a, b, ratio)


@pytest.mark.slow
def test_given_selection_small():
    """:func:`check_given_selection` (the GPU-size check) at interpreter sizes."""
    torch.manual_seed(6)
    check_given_selection([1, 30, 9], 4, 2, 16, torch.float32, 4, 3, 5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("K", [64, 128])
def test_parallel_nsa_gpu_sizes(dtype, K):
    """fla's sizes (G = 16, blocks of 64, 16 selected, a 512 window), varlen with length-1 sequences."""
    torch.manual_seed(5)
    check_given_selection([1, 1000, 2048, 47], 32, 2, K, dtype, 64, 16, 512)


def _block_means(k, cu, block_size):
    """``k [1, T, H, K]`` packed by ``cu`` -> block means ``[1, TC, H, K]`` (sequence by sequence)."""
    out = []
    for a, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        out += [k[0, s : min(s + block_size, e)].double().mean(0) for s in range(a, e, block_size)]
    return torch.stack(out)[None].to(k.dtype)


FLA060_SCRIPT = """
import math, sys, torch
import fla.ops.nsa.naive as nv
# fla's naive_nsa pools with a Triton kernel: the same block means in torch (no GPU here)
nv.mean_pooling = lambda x, bs, cu=None: torch.stack(
    [x[:, c * bs : (c + 1) * bs].mean(1) for c in range(math.ceil(x.shape[1] / bs))], 1
)
q, k, v, g_cmp, g_slc, S, BS = torch.load(sys.argv[1])
o, idx = nv.naive_nsa(q, k, v, g_cmp, g_slc, None, block_counts=S, block_size=BS, return_block_indices=True)
torch.save((o, idx), sys.argv[1])
"""


@pytest.mark.slow  # a subprocess importing fla 0.6.0
def test_matches_fla060_naive(tmp_path):
    """fla 0.6.0's own naive_nsa (at FLA060_PATH; float32 selected branch, no window: it needs flash-attn) picks
    the same blocks and gives the same output as ours."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
    torch.manual_seed(7)
    q, k, v, g_cmp, g_slc, _ = make(2, 45, 16, 1, 16, 16, torch.float64, requires_grad=False)
    path = tmp_path / "io.pt"
    torch.save((q, k, v, g_cmp, g_slc, 3, 4), path)
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FLA060_SCRIPT, str(path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    o_fla, idx_fla = torch.load(path)
    o, idx = naive_nsa(q, k, v, g_cmp, g_slc, None, block_counts=3, block_size=4, return_block_indices=True)
    assert torch.equal(torch.sort(idx.long(), -1).values, torch.sort(idx_fla.long(), -1).values)
    assert_close("o", o, o_fla, tol(torch.float32, 10))


@pytest.mark.parametrize("TQ, TK, BS", [(13, 13, 4), (3, 13, 4), (1, 64, 16), (7, 7, 8)])
def test_dense_tables_equal_the_varlen_ones(TQ, TK, BS):
    """The index tables built from the shapes alone equal those of the same batch given as ``cu_seqlens``."""
    B = 3
    dense = build_tables(B, TQ, TK, BS, None, DEVICE)
    cu_q = torch.arange(0, (B + 1) * TQ, TQ, device=DEVICE)
    cu_k = torch.arange(0, (B + 1) * TK, TK, device=DEVICE)
    packed = _varlen_tables(cu_q, cu_k, BS)
    assert (dense.dense_rows, packed.dense_rows) == (B, 0)  # the one field that tells the layouts apart
    for name, a in vars(dense).items():
        b = getattr(packed, name)
        if name != "dense_rows":
            assert (torch.equal(a, b) and a.dtype == b.dtype) if isinstance(a, torch.Tensor) else a == b, name


@pytest.mark.parametrize("TQ, TK, S", [(45, 45, 3), (5, 45, 2), (0, 45, 2)])
@pytest.mark.parametrize("budget", ["default", "two rows", "query steps"])
def test_dense_selection_equals_the_gathered_one(TQ, TK, S, budget, monkeypatch):
    """Without cu_seqlens the top-k selection scores batch rows' queries against their rows' blocks in products
    (as many whole rows per step as ``TOPK_ELEMENTS`` scores allow, else one row in steps of queries); it picks the
    blocks that the per-query gather (the packed-sequence path) picks. ``budget``: every row in one step (the
    default), two of the three rows per step, or steps of queries."""
    from dataclasses import replace

    import fla.ops.nsa.parallel as nsa_parallel
    from fla.ops.nsa.parallel import select_blocks_torch as select_blocks

    torch.manual_seed(3)
    B, HQ, H, K, BS = 3, 4, 2, 16, 8
    tables = build_tables(B, TQ, TK, BS, None, DEVICE)
    row_scores = TQ * max(tables.max_blocks, 1) * HQ
    if budget != "default":
        monkeypatch.setattr(nsa_parallel, "TOPK_ELEMENTS", 2 * row_scores + 1 if budget == "two rows" else 2)
    q = torch.randn(B * TQ, HQ, K, device=DEVICE)
    kc = torch.randn(tables.num_blocks, H, K, device=DEVICE)
    lse = torch.randn(B * TQ, HQ, device=DEVICE)
    counts = torch.randint(1, S + 1, (B * TQ, H), device=DEVICE, dtype=torch.int32)
    for n_sel in (None, counts):
        fast = select_blocks(q, kc, lse, tables, S, n_sel, 0.5)
        gathered = select_blocks(q, kc, lse, replace(tables, dense_rows=0), S, n_sel, 0.5)
        assert torch.equal(fast, gathered)


@pytest.mark.parametrize("layout", ["dense", "packed", "cached prefix"])
def test_topk_kernel_equals_the_torch_selection(layout):
    """The top-k kernel (fla/ops/nsa/topk.py) picks the torch path's blocks in the torch path's order: dense rows,
    packed sequences of 1 to 16 tokens and queries after a cached prefix; a uniform and a per-query block count
    (slots past it -1), more slots than blocks, ties (equal scores: the later block first) and G = 3 (padded)."""
    from fla.ops.nsa.parallel import select_blocks_torch
    from fla.ops.nsa.topk import select_blocks_triton

    torch.manual_seed(5)
    HQ, H, K, BS = 6, 2, 20, 4
    if layout == "dense":
        tables = build_tables(2, 19, 19, BS, None, DEVICE)
    elif layout == "packed":
        cu = torch.tensor([0, 1, 17, 24], dtype=torch.int32, device=DEVICE)
        tables = build_tables(1, 24, 24, BS, cu, DEVICE)
    else:
        tables = build_tables(2, 3, 30, BS, None, DEVICE)
    NQ = tables.tok_pos.numel()
    q = torch.randn(NQ, HQ, K, device=DEVICE)
    kc = torch.randn(tables.num_blocks, H, K, device=DEVICE)
    kc[2] = kc[1]  # two blocks of equal scores: a tie
    lse = torch.randn(NQ, HQ, device=DEVICE) + 3
    counts = torch.randint(1, 4, (NQ, H), device=DEVICE, dtype=torch.int32)
    for S, n_sel in ((3, None), (3, counts), (9, None)):  # 9: more slots than any sequence has blocks
        ref = select_blocks_torch(q, kc, lse, tables, S, n_sel, 0.5)
        got = select_blocks_triton(q, kc, lse, tables, S, n_sel, 0.5)
        assert torch.equal(got, ref), (S, n_sel is None, (got != ref).nonzero()[:4].tolist())
