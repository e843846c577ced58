"""parallel_path_attn (PaTH attention) against the float64 step-by-step reference with materialised products."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fla.ops.attn import attn_decoding_one_step
from fla.ops.path_attn import naive_path_attn, parallel_path_attn, path_rank_one_update, path_transform_keys
from tests.harness import BACKENDS, DEVICE, assert_close, child_pythonpath, saved_for_backward, tol, using


def make(B, T, HQ, H, K, V, dtype, gate=True, requires_grad=True):
    """Random q, k, v (``dtype``), unit w and beta in (0, 2) (float32, as the layer gives them) and a log
    forget gate ``logsigmoid(N(1, 1))`` on DEVICE."""
    x = [torch.randn(B, T, HQ, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)]
    x = [t.to(DEVICE, dtype) for t in x]
    w = F.normalize(torch.randn(B, T, H, K), dim=-1).to(DEVICE)
    beta = (2 * torch.rand(B, T, H)).to(DEVICE)
    g = F.logsigmoid(torch.randn(B, T, HQ) + 1).to(DEVICE) if gate else None
    return [None if t is None else t.requires_grad_(requires_grad) for t in (*x, w, beta, g)]


def key_cache_reference(k, w, beta, cu_seqlens=None):
    """Token by token: every token's Householder factor applied to all earlier keys of its sequence (float64)."""
    k, w, beta = k.double(), w.double(), beta.double()
    out = k.clone()
    B, T = k.shape[:2]
    rows = [(b, 0, T) for b in range(B)] if cu_seqlens is None else [
        (0, a, e) for a, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())]  # fmt: skip
    for b, bos, eos in rows:
        for t in range(bos + 1, eos):
            out[b, bos:t] = path_rank_one_update(out[b, bos:t], w[b, t], beta[b, t])
    return out


def check(backend, inputs, ratio, cu_seqlens=None, scale=None):
    """o, the key cache and every gradient against :func:`naive_path_attn` in float64."""
    names = ["q", "k", "v", "w", "beta", "g"]
    named = dict(zip(names, inputs))
    refs = {n: None if t is None else t.detach().double().requires_grad_() for n, t in named.items()}
    with using(backend):
        o, k_cache = parallel_path_attn(*inputs, scale=scale, cu_seqlens=cu_seqlens, use_cache=True)
    o_ref = naive_path_attn(*refs.values(), scale=scale, cu_seqlens=cu_seqlens)
    assert o.dtype == inputs[0].dtype and k_cache.dtype == inputs[1].dtype
    assert_close("o", o_ref, o, ratio)
    assert_close("k_cache", key_cache_reference(named["k"], named["w"], named["beta"], cu_seqlens), k_cache, ratio)
    do = torch.randn_like(o_ref)
    given = [n for n in names if named[n] is not None]
    got = torch.autograd.grad(o, [named[n] for n in given], do.to(o.dtype))
    want = torch.autograd.grad(o_ref, [refs[n] for n in given], do)
    for name, a, b in zip(given, want, got):
        assert b.dtype == named[name].dtype, name
        assert_close(f"d{name}", a, b, ratio)


CASES = {
    # B, T, HQ, H, K, V, dtype, gate; the default suite runs FAST
    "gqa_gate_two_chunks": (1, 70, 2, 1, 20, 24, torch.float32, True),
    "fp16_gate": (1, 40, 2, 2, 16, 16, torch.float16, True),
    "mha_odd": (2, 63, 2, 2, 60, 36, torch.float32, False),
    "fp16_gqa_three_chunks": (1, 150, 4, 2, 32, 40, torch.float16, True),
    "one_token": (2, 1, 2, 1, 16, 16, torch.float32, True),
}
FAST = {("triton", "gqa_gate_two_chunks"), ("torch", "fp16_gate"), ("torch", "one_token")}


@pytest.mark.parametrize(
    "backend, case",
    [pytest.param(b, c, marks=[] if (b, c) in FAST else [pytest.mark.slow]) for c in CASES for b in BACKENDS],
)
def test_parallel_path_attn(backend, case):
    B, T, HQ, H, K, V, dtype, gate = CASES[case]
    ratio = tol(dtype, 10 if dtype == torch.float32 else 3)
    check(backend, make(B, T, HQ, H, K, V, dtype, gate), ratio, scale=0.3 if gate else None)


@pytest.mark.parametrize("backend", ["triton", pytest.param("torch", marks=pytest.mark.slow)])
def test_varlen_with_length_one_sequences(backend):
    lengths = [1, 65, 1, 3]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    check(backend, make(1, sum(lengths), 2, 1, 20, 24, torch.float32), tol(torch.float32, 10), cu)


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_equals_each_sequence_alone(backend):
    lengths = [30, 1, 70]
    cu = torch.tensor([0, 30, 31, 101], dtype=torch.int64, device=DEVICE)
    inputs = make(1, 101, 2, 1, 16, 16, torch.float32, requires_grad=False)
    with using(backend):
        packed, cache = parallel_path_attn(*inputs, cu_seqlens=cu, use_cache=True)
        for a, n in zip(cu[:-1].tolist(), lengths):
            alone, alone_cache = parallel_path_attn(*(t[:, a : a + n] for t in inputs), use_cache=True)
            assert_close(f"sequence at {a}", alone, packed[:, a : a + n], tol(torch.float32, 10))
            assert_close(f"cache at {a}", alone_cache, cache[:, a : a + n], tol(torch.float32, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoding_with_the_key_cache_is_the_last_query(backend):
    """Prefill's key cache, the new token's factor applied to it, its key appended: FoX decoding (gate times
    scale) gives the full sequence's last output."""
    q, k, v, w, beta, g = make(2, 67, 2, 1, 24, 24, torch.float32, requires_grad=False)
    with using(backend):
        o, _ = parallel_path_attn(q, k, v, w, beta, g)
        _, cache = parallel_path_attn(*(t[:, :-1] for t in (q, k, v, w, beta, g)), use_cache=True)
        keys = torch.cat([path_rank_one_update(cache, w[:, -1], beta[:, -1]), k[:, -1:]], 1)
        cu = torch.tensor([0, 67, 134], dtype=torch.int32, device=DEVICE)
        flat = [t.reshape(1, 134, *t.shape[2:]) for t in (keys, v, g)]
        step = attn_decoding_one_step(q[:, -1][None], *flat, cu_seqlens=cu, do_gate_scale=True)
    assert_close("last query", o[:, -1], step[0], tol(torch.float32, 10))


def test_the_reference_is_the_product_of_householder_matrices():
    """fla 0.6.0's maths with the products as matrices: s_ij = scale * (q_i^T H_i ... H_{j+1} k_j + G_i - G_j),
    ``H_t = I - beta_t w_t w_t^T`` (the gate is scaled too, as fla's kernels and its decoding do)."""
    q, k, v, w, beta, g = (t.double() for t in make(1, 6, 1, 1, 4, 3, torch.float32, requires_grad=False))
    scale, eye = 0.7, torch.eye(4, dtype=torch.float64)
    o = naive_path_attn(q, k, v, w, beta, g, scale)
    G = g[0, :, 0].cumsum(0)
    for i in range(6):
        s, P = torch.zeros(i + 1, dtype=torch.float64), eye
        for j in range(i, -1, -1):
            s[j] = (q[0, i, 0] @ P @ k[0, j, 0] + G[i] - G[j]) * scale
            P = P @ (eye - beta[0, j, 0] * torch.outer(w[0, j, 0], w[0, j, 0]))
        assert_close(f"o_{i}", torch.softmax(s, 0) @ v[0, : i + 1, 0], o[0, i, 0], 1e-12)


def test_bad_inputs_raise_before_any_kernel():
    q, k, v, w, beta, g = make(1, 10, 4, 2, 16, 16, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match=r"w has shape \[1, 10, 2, 8\]"):
        parallel_path_attn(q, k, v, w[..., :8], beta)
    with pytest.raises(ValueError, match=r"beta has shape \[1, 10, 4\]"):
        parallel_path_attn(q, k, v, w, beta.repeat(1, 1, 2))
    with pytest.raises(ValueError, match=r"g has shape \[1, 10, 2\]"):
        parallel_path_attn(q, k, v, w, beta, g[..., :2])
    with pytest.raises(ValueError, match="not a multiple of the 3 key/value heads"):
        parallel_path_attn(q, k[:, :, :1].repeat(1, 1, 3, 1), v[:, :, :1].repeat(1, 1, 3, 1), w, beta)
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        parallel_path_attn(q, k, v, w, beta, cu_seqlens=torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match="end at the token count 10, got 0 .. 9"):
        parallel_path_attn(q, k, v, w, beta, cu_seqlens=torch.tensor([0, 9], dtype=torch.int32))
    with pytest.raises(ValueError, match="must be increasing|non-decreasing|increasing"):
        parallel_path_attn(q, k, v, w, beta, cu_seqlens=torch.tensor([0, 6, 4, 10], dtype=torch.int32))
    with pytest.raises(ValueError, match="the batch size must be 1"):
        parallel_path_attn(*(t.repeat(2, *[1] * (t.dim() - 1)) for t in (q, k, v, w, beta)),
                           cu_seqlens=torch.tensor([0, 10], dtype=torch.int32))  # fmt: skip


def test_key_cache_of_the_torch_path_is_the_reference():
    """The chunked key cache (chunks of 16 and of 64 tokens) equals the token-by-token one."""
    k = torch.randn(2, 70, 2, 12, dtype=torch.float64)
    w = F.normalize(torch.randn(2, 70, 2, 12, dtype=torch.float64), dim=-1)
    beta = 2 * torch.rand(2, 70, 2, dtype=torch.float64)
    ref = key_cache_reference(k, w, beta)
    for C in (16, 64):
        assert_close(f"chunk {C}", ref, path_transform_keys(k, w, beta, chunk_size=C), 1e-12)


@pytest.mark.slow  # ~3 min: 28 kernel variants through the GPU compiler
def test_kernels_compile_for_sm90_without_a_gpu():
    """Compile every kernel variant for sm_90 in a process without TRITON_INTERPRET
    (tests/fla/ops/path_attn_compile_check.py)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = child_pythonpath()
    run = subprocess.run(
        [sys.executable, "-m", "tests.fla.ops.path_attn_compile_check"], env=env, capture_output=True, text=True,
        timeout=900, cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.splitlines()) == 4 * 4 + 4 * 3, run.stdout


def against_torch_path(inputs, cu_seqlens, ratio, grad_ratio):
    """The Triton paths (training: o and every gradient; inference: o and the key cache) against the chunked
    PyTorch path in float64 (the token-by-token reference is too slow at these sizes)."""
    refs = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    with using("triton"):
        o = parallel_path_attn(*inputs, cu_seqlens=cu_seqlens)[0]
        with torch.no_grad():
            o_inf, cache = parallel_path_attn(*inputs, cu_seqlens=cu_seqlens, use_cache=True)
    with using("torch"):
        ref, ref_cache = parallel_path_attn(*refs, cu_seqlens=cu_seqlens, use_cache=True)
    assert_close("o", ref, o, ratio)
    assert_close("o (inference)", ref, o_inf, ratio)
    assert_close("k_cache", ref_cache, cache, ratio)
    do = torch.randn_like(ref)
    given = [i for i, t in enumerate(inputs) if t is not None]
    got = torch.autograd.grad(o, [inputs[i] for i in given], do.to(o.dtype))
    want = torch.autograd.grad(ref, [refs[i] for i in given], do)
    for i, a, b in zip(given, want, got):
        assert_close(f"d{['q', 'k', 'v', 'w', 'beta', 'g'][i]}", a, b, grad_ratio)


def test_training_and_inference_paths_agree_with_the_torch_path():
    lengths = [1, 70, 3]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    against_torch_path(make(1, sum(lengths), 2, 1, 16, 16, torch.float32), cu, tol(torch.float32, 10),
                       tol(torch.float32, 10))  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("K", [64, 128])
def test_parallel_path_attn_gpu_sizes(dtype, K):
    lengths = [1, 1000, 700, 47]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    against_torch_path(make(1, sum(lengths), 8, 2, K, K, dtype), cu, tol(dtype, 3), tol(dtype, 5))
    against_torch_path(make(2, 300, 4, 4, K, K, dtype), None, tol(dtype, 3), tol(dtype, 5))


def test_training_path_keeps_no_factor_intermediates_for_the_backward():
    # the chunk-local factors are made again in the backward: what the op keeps is its inputs (q, k, w, 3 KiB per
    # token here), v and o in the chunk layout and lse, 5 KiB in all; keeping the factors (x0, a, k_hat, W, U) and
    # their float32 intermediates made it 20 (PaTH-340M peaked at 41 GiB on an H100)
    B, T, H, K = 1, 512, 4, 64
    q, k, v = (torch.randn(B, T, H, K, device=DEVICE, requires_grad=True) for _ in range(3))
    w = F.normalize(torch.randn(B, T, H, K, device=DEVICE), dim=-1).requires_grad_()
    beta = (2 * torch.rand(B, T, H, device=DEVICE)).requires_grad_()
    with using("triton"), saved_for_backward() as saved:
        o = parallel_path_attn(q, k, v, w, beta)[0]
    kept = {(t.data_ptr(), t.dtype, tuple(t.shape)): t.numel() * t.element_size() for t in saved}  # each once
    kib_per_token = sum(kept.values()) / (B * T) / 1024
    assert kib_per_token <= 6, f"the training path keeps {kib_per_token:.1f} KiB per token for the backward"
    o.sum().backward()  # the recomputation runs
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v, w, beta))
