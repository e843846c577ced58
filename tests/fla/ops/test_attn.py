"""parallel_attn / parallel_forgetting_attn / attn_decoding_one_step against the float64 step-by-step reference."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import triton
from triton.runtime.autotuner import Autotuner

from fla.layers.attention_backends import attention_dense, attention_dense_fla, attention_varlen, attention_varlen_fla
from fla.ops.attn import attn_decoding_one_step, naive_parallel_attn, parallel, parallel_attn, tiles
from fla.ops.common.cumsum import global_cumsum, global_cumsum_torch
from fla.ops.forgetting_attn import naive_forgetting_attn, parallel_forgetting_attn
from fla.ops.utils import prepare_chunk_indices
from tests.harness import BACKENDS, DEVICE, assert_close, child_pythonpath, tol, using


def make(B, T, HQ, H, K, V, dtype, gate=True, requires_grad=True):
    """Random q, k, v (and a log forget gate ``logsigmoid(N(1, 1))``) on DEVICE."""
    x = [torch.randn(B, T, HQ, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)]
    x = [t.to(DEVICE, dtype).requires_grad_(requires_grad) for t in x]
    g = F.logsigmoid(torch.randn(B, T, HQ) + 1).to(DEVICE).requires_grad_(requires_grad) if gate else None
    return (*x, g)


def check(backend, inputs, ratio, window_size=None, cu_seqlens=None, scale=None, sink=False):
    """o, lse and every gradient (lse's and the sink's too) against :func:`naive_parallel_attn` in float64."""
    q, k, v, g = inputs
    sink_bias = torch.randn(q.shape[2], device=DEVICE).requires_grad_() if sink else None
    named = {"q": q, "k": k, "v": v, "g": g, "sink_bias": sink_bias}
    refs = {n: None if t is None else t.detach().double().requires_grad_() for n, t in named.items()}
    with using(backend):
        o, lse = parallel_attn(q, k, v, g, scale, window_size, cu_seqlens, sink_bias=sink_bias, return_lse=True)
    o_ref, lse_ref = naive_parallel_attn(
        refs["q"], refs["k"], refs["v"], scale, window_size, g=refs["g"], sink_bias=refs["sink_bias"],
        cu_seqlens=cu_seqlens, return_lse=True,
    )  # fmt: skip
    assert o.dtype == q.dtype and lse.shape == q.shape[:3]
    assert_close("o", o_ref, o, ratio)
    assert_close("lse", lse_ref, lse, ratio)
    do, dlse = torch.randn_like(o_ref), torch.randn_like(lse_ref)
    names = [n for n, t in named.items() if t is not None]
    got = torch.autograd.grad([o, lse], [named[n] for n in names], [do.to(o.dtype), dlse.float()])
    want = torch.autograd.grad([o_ref, lse_ref], [refs[n] for n in names], [do, dlse])
    for name, a, b in zip(names, want, got):
        assert b.dtype == named[name].dtype, name
        assert_close(f"d{name}", a, b, ratio)


CASES = {
    # B, T, HQ, H, K, V, dtype, gate, window, sink; the default suite runs FAST
    "gqa_gate_window_sink_two_blocks": (1, 70, 2, 1, 20, 24, torch.float32, True, 40, True),
    "fp16_gate": (1, 40, 2, 2, 16, 16, torch.float16, True, None, False),
    "gqa_gate_odd": (2, 63, 4, 2, 60, 36, torch.float32, True, None, False),
    "mha_window_short": (2, 100, 2, 2, 20, 24, torch.float32, True, 7, False),
    "mqa_window_longer_than_T": (2, 40, 3, 1, 36, 20, torch.float32, False, 100, False),
    "fp16_gqa_gate_window_sink": (2, 100, 4, 2, 32, 40, torch.float16, True, 33, True),
    "one_token": (2, 1, 2, 1, 16, 16, torch.float32, True, None, False),
    # GQA 4:1 (the dkv program loops over the group), a window with edge *and* whole key blocks, T off the tiles
    "gqa4_gate_window_whole_blocks": (1, 80, 4, 1, 16, 20, torch.float32, True, 50, True),
    # a window shorter than a tile (every block a diagonal or edge block)
    "fp16_gqa4_window_shorter_than_tile": (1, 45, 4, 1, 16, 16, torch.float16, False, 5, False),
}
FAST = {
    ("triton", "gqa_gate_window_sink_two_blocks"),
    ("triton", "fp16_gate"),
    ("torch", "fp16_gate"),
    ("triton", "gqa4_gate_window_whole_blocks"),
    ("triton", "fp16_gqa4_window_shorter_than_tile"),
}


@pytest.mark.parametrize(
    "backend, case",
    [pytest.param(b, c, marks=[] if (b, c) in FAST else [pytest.mark.slow]) for c in CASES for b in BACKENDS],
)
def test_parallel_attn(backend, case):
    B, T, HQ, H, K, V, dtype, gate, window, sink = CASES[case]
    ratio = tol(dtype, 10 if dtype == torch.float32 else 2)
    inputs = make(B, T, HQ, H, K, V, dtype, gate)
    check(backend, inputs, ratio, window_size=window, scale=0.3 if gate else None, sink=sink)


@contextlib.contextmanager
def interpret_tiles(BT: int, BS: int):
    """Run the attention kernels under the interpreter with tiles ``(BT, BS)`` (varlen too) instead of the
    single interpreter config of :mod:`fla.ops.attn.tiles`."""
    saved = []
    for kernel in (parallel.parallel_attn_fwd_kernel, parallel.parallel_attn_bwd_dq_kernel,
                   parallel.parallel_attn_bwd_dkv_kernel):  # fmt: skip
        node = kernel
        while not isinstance(node, Autotuner):
            node = getattr(node, "kernel", None) or node.fn
        saved.append((node, node.configs))
        node.configs = [triton.Config({"BT": BT, "BS": BS}, num_warps=4, num_stages=1)]
    old = tiles.INTERPRET_TILES
    tiles.INTERPRET_TILES = (BT, BS, 4, 1)
    try:
        yield
    finally:
        tiles.INTERPRET_TILES = old
        for node, configs in saved:
            node.configs = configs


@pytest.mark.parametrize(
    "BT, BS, varlen", [(64, 16, False), (16, 16, True), pytest.param(64, 16, True, marks=pytest.mark.slow)]
)
def test_parallel_attn_other_tiles(BT, BS, varlen):
    """Tiles with several diagonal blocks per program (BT = 4 BS) and with one (BT = BS), as the GPU candidates
    have: GQA, a window with edge and whole blocks, gate, sink, T off the tiles; varlen with length-1 sequences
    (the varlen tile follows BT)."""
    if DEVICE.type != "cpu":
        pytest.skip("overrides the interpreter's tiles (on a GPU the autotuner and lean launches own them)")
    cu = None
    if varlen:
        cu = torch.tensor([0, 1, 51, 52, 97], dtype=torch.int32, device=DEVICE)
    inputs = make(1, 97 if varlen else 100, 2, 1, 16, 16, torch.float32)
    with interpret_tiles(BT, BS):
        check("triton", inputs, tol(torch.float32, 10), window_size=70, cu_seqlens=cu, sink=True)


def test_tile_pruning(monkeypatch):
    """The GPU candidates: varlen launches keep the varlen tile; sizes whose shared memory cannot fit fall back."""
    monkeypatch.setattr(tiles, "IS_TRITON_INTERPRET", False)
    configs = [tiles._config(t) for t in tiles.FWD_TILES]

    def pruned(dtype, D, varlen):
        q = torch.empty(1, 1, 1, D, dtype=dtype, device="meta")
        BK = max(16, 1 << (D - 1).bit_length())
        kept = tiles.prune_tiles(configs, {"q": q}, BK=BK, BV=BK, IS_VARLEN=varlen)
        return [(c.kwargs["BT"], c.kwargs["BS"], c.num_warps, c.num_stages) for c in kept]

    assert pruned(torch.bfloat16, 128, False) == list(tiles.FWD_TILES)
    assert pruned(torch.bfloat16, 128, True) == [t for t in tiles.FWD_TILES if t[0] == 128]
    assert pruned(torch.float32, 64, True) == [t for t in tiles.FWD_TILES if t[0] == 64]  # fp32 varlen tile: 64
    assert pruned(torch.float32, 128, False) == [(64, 32, 8, 2), (128, 32, 8, 2), (64, 32, 8, 1), (128, 32, 8, 1)]
    assert pruned(torch.float16, 256, True) == [(64, 32, 8, 2), (64, 32, 8, 1)]
    assert pruned(torch.float32, 512, True) == [(64, 32, 8, 1)]  # nothing fits: the smallest
    for dtype, D in ((torch.bfloat16, 128), (torch.float32, 96), (torch.float16, 256)):
        assert all(t[0] == tiles.varlen_tile(dtype, D, D) for t in pruned(dtype, D, True)), (dtype, D)


@pytest.mark.parametrize(
    "backend, window", [("triton", 5), pytest.param("torch", 5, marks=pytest.mark.slow),
                        pytest.param("triton", None, marks=pytest.mark.slow)]
)  # fmt: skip
def test_parallel_attn_varlen_with_length_one_sequences(backend, window):
    lengths = [1, 30, 1, 1, 5]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    check(backend, make(1, sum(lengths), 4, 2, 20, 24, torch.float32), tol(torch.float32, 10), window, cu)


@pytest.mark.parametrize("backend", ["triton", pytest.param("torch", marks=pytest.mark.slow)])
def test_varlen_equals_each_sequence_alone(backend):
    lengths = [30, 1, 45]
    cu = torch.tensor([0, 30, 31, 76], dtype=torch.int64, device=DEVICE)
    q, k, v, g = make(1, 76, 2, 1, 16, 16, torch.float32, requires_grad=False)
    with using(backend):
        packed = parallel_attn(q, k, v, g, cu_seqlens=cu)
        given = parallel_attn(q, k, v, g, cu_seqlens=cu, chunk_indices=prepare_chunk_indices(cu, 64))
        assert torch.equal(given, packed), "precomputed chunk_indices give the same result"
        for a, n in zip(cu[:-1].tolist(), lengths):
            alone = parallel_attn(*(t[:, a : a + n] for t in (q, k, v, g)))
            assert_close(f"sequence at {a}", alone, packed[:, a : a + n], tol(torch.float32, 10))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
def test_forgetting_attn(backend):
    q, k, v, g = make(1, 20, 4, 2, 24, 24, torch.float32, requires_grad=False)
    with using(backend):
        o = parallel_forgetting_attn(q, k, v, g, window_size=9)
    ref = naive_forgetting_attn(q.double(), k.double(), v.double(), g.double(), window_size=9)
    assert_close("o", ref, o, tol(torch.float32, 10))
    with pytest.raises(ValueError, match="needs the forget gate g"):
        parallel_forgetting_attn(q, k, v, None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [3, *(pytest.param(w, marks=pytest.mark.slow) for w in (None, 0, 1000))])
def test_decoding_is_the_last_query_of_parallel_attn(backend, window):
    lengths = [5, 1, 20, 2]
    HQ, H, K, V = 4, 2, 20, 36
    N = len(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    _, k, v, g = make(1, sum(lengths), HQ, H, K, V, torch.float32, requires_grad=False)
    q = torch.randn(1, N, HQ, K, device=DEVICE)
    sink = torch.randn(HQ, device=DEVICE) if window == 3 else None
    scale = K**-0.5
    with using(backend):
        o = attn_decoding_one_step(q, k, v, g, cu_seqlens=cu, do_gate_scale=True, window_size=window, sink_bias=sink)
    assert o.shape == (1, N, HQ, V)
    for n, (a, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        if window == 0:
            assert torch.equal(o[0, n], torch.zeros_like(o[0, n]))
            continue
        qs = torch.zeros(1, e - a, HQ, K, dtype=torch.float64, device=DEVICE)
        qs[0, -1] = q[0, n].double()
        sink64 = None if sink is None else sink.double()
        gs = g[:, a:e].double() * scale
        ref = naive_parallel_attn(qs, k[:, a:e].double(), v[:, a:e].double(), None, window, g=gs, sink_bias=sink64)
        ref = ref[0][0, -1]
        assert_close(f"sequence {n}", ref, o[0, n], tol(torch.float32, 10))


def test_naive_reference_keeps_fla060_signature():
    """fla 0.6.0's positional order (scale, window_size, causal) and its second output (the max score)."""
    q, k, v, _ = make(1, 6, 2, 1, 8, 8, torch.float64, gate=False, requires_grad=False)
    o, max_logits = naive_parallel_attn(q, k, v, 0.5, None, False)
    s = torch.einsum("bqhk,bjhk->bhqj", q, k.expand(-1, -1, 2, -1)) * 0.5  # non-causal: every key
    assert_close("o", torch.einsum("bhqj,bjhv->bqhv", s.softmax(-1), v.expand(-1, -1, 2, -1)), o, 1e-12)
    assert_close("max_logits", s.amax(-1).transpose(1, 2), max_logits, 1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_global_cumsum_restarts_at_every_sequence(reverse):
    cu = torch.tensor([0, 1, 300, 301, 333], dtype=torch.int32, device=DEVICE)
    g = torch.randn(1, 333, 3, device=DEVICE)
    with using("triton"):
        out = global_cumsum(g, cu, reverse=reverse, scale=0.5)
    parts = [g[:, a:e] * 0.5 for a, e in zip(cu[:-1].tolist(), cu[1:].tolist())]
    ref = torch.cat([(p.flip(1).cumsum(1).flip(1) if reverse else p.cumsum(1)) for p in parts], 1)
    assert_close("G", ref.double(), out, tol(torch.float32, 10))
    assert_close("G torch", ref.double(), global_cumsum_torch(g, cu, reverse, 0.5), tol(torch.float32, 10))


@pytest.mark.parametrize("window", [None, 4])
def test_matches_the_attention_layer_backends(window):
    """The parallel_attn entry points of fla.layers.attention_backends match its default ones (dense, varlen, GQA)."""
    q, k, v, _ = make(2, 23, 4, 2, 16, 16, torch.float32, gate=False, requires_grad=False)
    ref = attention_dense(q, k, v, window_size=window, scale=0.2)
    assert_close("dense", ref, attention_dense_fla(q, k, v, window_size=window, scale=0.2), 1e-5)
    cu = torch.tensor([0, 1, 17, 23], dtype=torch.int32, device=DEVICE)
    ref = attention_varlen(q[0], k[0], v[0], cu, 23, window)
    assert_close("varlen", ref, attention_varlen_fla(q[0], k[0], v[0], cu, 23, window), 1e-5)
    with pytest.raises(ValueError, match="needs as many keys as queries, got 23 and 22"):
        attention_dense_fla(q[:, 1:], k, v)


def test_errors_name_the_argument():
    q, k, v, g = make(1, 8, 4, 2, 16, 16, torch.float32, requires_grad=False)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    cases = [
        ((q, k[..., :15], v), {}, ValueError, r"k has shape \[1, 8, 2, 15\], expected \[1, 8, \*, 16\]"),
        ((q, k, v[:, :7]), {}, ValueError, r"v has shape \[1, 7, 2, 16\]"),
        ((q[:, :, :3], k, v), {}, ValueError, "q has 3 heads, not a multiple of the 2 key/value heads"),
        ((q, k, v, g[..., 0]), {}, ValueError, r"g has shape \[1, 8\], expected \[1, 8, 4\]"),
        ((q, k, v.half()), {}, TypeError, "v has dtype torch.float16 but q has dtype torch.float32"),
        ((q, k, v), {"sink_bias": torch.zeros(2)}, ValueError, r"sink_bias has shape \[2\], expected \[4\]"),
        ((q, k, v), {"window_size": 0}, ValueError, "window_size must be None or a positive integer, got 0"),
        ((q, k, v), {"cu_seqlens": cu.float()}, TypeError, "cu_seqlens has dtype torch.float32"),
        ((q, k, v), {"cu_seqlens": torch.tensor([0, 5, 3, 8])}, ValueError, "non-decreasing"),
        ((q, k, v), {"cu_seqlens": torch.tensor([0, 3, 7])}, ValueError, "end at the token count 8"),
        ((q.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1)), {"cu_seqlens": cu},
         ValueError, "batch size must be 1"),
    ]  # fmt: skip
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            parallel_attn(*args, **kwargs)
    with pytest.raises(ValueError, match="cu_seqlens is required"):
        attn_decoding_one_step(q[:, :1], k, v)
    with pytest.raises(ValueError, match="cu_seqlens describes 2 sequences but q has 1 queries"):
        attn_decoding_one_step(q[:, :1], k, v, cu_seqlens=cu)
    with pytest.raises(ValueError, match="non-negative integer, got -1"):
        attn_decoding_one_step(q[:, :2], k, v, cu_seqlens=cu, window_size=-1)


@pytest.mark.slow  # ~2 min: 61 kernel variants through the GPU compiler
def test_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter runs code the GPU compiler refuses: compile every kernel variant for sm_90 in a process
    without TRITON_INTERPRET (tests/fla/ops/attn_compile_check.py)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = child_pythonpath()
    run = subprocess.run(
        [sys.executable, "-m", "tests.fla.ops.attn_compile_check"], env=env, capture_output=True, text=True,
        timeout=900, cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.splitlines()) == 8 * 3 + 3 * (3 + 4) + 2 + 16 + 2 + 4, run.stdout
    assert " spill=0" in run.stdout, run.stdout  # ptxas ran on the PTX


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("K", [64, 128])
def test_parallel_attn_gpu_sizes(dtype, K):
    lengths = [1, 1000, 2048, 47]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    check("triton", make(1, sum(lengths), 8, 2, K, K, dtype), tol(dtype, 2), window_size=None, cu_seqlens=cu)
    check("triton", make(2, 1000, 4, 4, K, K, dtype), tol(dtype, 2), window_size=256)


@pytest.mark.parametrize("window, H", [(None, 2), (0, 4), (40, 1), (40, 4)])
def test_decoding_split_keys_merge_to_one_pass(window, H):
    # the split-KV kernels (forced split counts; the automatic count is 1 at these sizes) against one pass and the
    # reference: splits shorter than a key block, empty ones (length-1 and window-cut sequences), a sink; H = 4:
    # one query head per key/value head, else the grouped kernel (GQA 2:1, MQA)
    from fla.ops.attn.decoding import _decoding_triton

    lengths = [1, 200, 3, 97]
    HQ, K, V = 4, 20, 36
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    _, k, v, g = make(1, sum(lengths), HQ, H, K, V, torch.float32, requires_grad=False)
    q = torch.randn(1, len(lengths), HQ, K, device=DEVICE)
    sink = torch.randn(HQ, device=DEVICE)
    with using("triton"):
        outs = [_decoding_triton(q, k, v, g, sink, 0.3, cu, 1.0, window, num_splits=n) for n in (1, 2, 8)]
    with using("torch"):
        ref = attn_decoding_one_step(q.double(), k.double(), v.double(), g.double(), scale=0.3, cu_seqlens=cu,
                                     window_size=window, sink_bias=sink.double())  # fmt: skip
    for n, o in zip((1, 2, 8), outs):
        assert_close(f"{n} splits", ref, o, tol(torch.float32, 10))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decoding_gpu_sizes(dtype):
    lengths = [1, 3000, 517, 4096]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    _, k, v, g = make(1, sum(lengths), 16, 4, 128, 128, dtype, requires_grad=False)
    q = torch.randn(1, len(lengths), 16, 128, device=DEVICE, dtype=dtype)
    sink = torch.randn(16, device=DEVICE)
    for window in (None, 1024):
        with using("triton"):
            o = attn_decoding_one_step(q, k, v, g, cu_seqlens=cu, window_size=window, sink_bias=sink)
        with using("torch"):
            ref = attn_decoding_one_step(q.double(), k.double(), v.double(), g.double(), cu_seqlens=cu,
                                         window_size=window, sink_bias=sink.double())  # fmt: skip
        assert_close(f"window {window}", ref, o, tol(dtype, 2))
