"""chunk_gsa / fused_recurrent_gsa (and the value-gated stage under them) against the float64 recurrence."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops.common.chunk_gv import chunk_value_gated
from fla.ops.common.recurrent_torch import recurrent_gated_torch_op
from fla.ops.gsa import chunk_gsa, fused_recurrent_gsa, naive_chunk_gsa, naive_recurrent_gsa
from tests.harness import DEVICE, assert_close, assert_grads_close, to_reference, tol, using

TOKENS = ("q", "k", "v", "s", "g")


def make_inputs(B, T, H, K, V, M, dtype, num_states=None, HQ=None, strength=1.0, device=DEVICE):
    """Leaf tensors requiring grad: q ``[B, T, HQ, K]``, k, v, s, g (log gates times ``strength``) and, with
    ``num_states``, hk0 ``[N, H, K, M]``, hv0 ``[N, H, M, V]`` (float32, float64 for float64 inputs)."""
    x = {
        "q": torch.randn(B, T, HQ or H, K, device=device),
        "k": torch.randn(B, T, H, K, device=device),
        "v": torch.randn(B, T, H, V, device=device),
        "s": torch.randn(B, T, H, M, device=device),
        "g": F.logsigmoid(torch.randn(B, T, H, M, device=device)) * strength,
    }
    x = {n: t.to(dtype) for n, t in x.items()}
    if num_states is not None:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        x["hk0"] = torch.randn(num_states, H, K, M, device=device, dtype=state_dtype)
        x["hv0"] = torch.randn(num_states, H, M, V, device=device, dtype=state_dtype)
    return {n: t.requires_grad_() for n, t in x.items()}


def call(op, x, **kwargs):
    """``op(q, k, v, s, g, initial_state=(hk0, hv0), output_final_state=True, **kwargs)`` -> ``(o, states)``."""
    h0 = (x["hk0"], x["hv0"]) if "hk0" in x else None
    o, ht = op(*(x[n] for n in TOKENS), initial_state=h0, output_final_state=True, **kwargs)
    return o, tuple(ht)


def check(op, x, backend, ratio, reference=naive_recurrent_gsa, **kwargs):
    """``op`` (``backend``) vs ``reference`` in float64: output, both final states, every gradient."""
    with using(backend):
        o, ht = call(op, x, **kwargs)
    ref_x = {n: to_reference(t) for n, t in x.items()}
    ref_o, ref_ht = call(reference, ref_x, **kwargs)
    assert o.dtype == x["v"].dtype
    assert_close("o", ref_o, o, ratio)
    for i, (s, ref_s) in enumerate(zip(ht, ref_ht, strict=True)):
        assert s.dtype == (torch.float64 if x["q"].dtype == torch.float64 else torch.float32)
        assert_close(f"ht[{i}]", ref_s, s, ratio)
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    assert_grads_close(x, ref_x, (o, *ht), (ref_o, *ref_ht), grad_outputs, ratio)


def test_chunk_torch():
    x = make_inputs(1, 63, 2, 20, 24, 12, torch.float32, num_states=1)
    check(chunk_gsa, x, "torch", tol(torch.float32, 5), scale=0.5)


def test_chunk_triton_small():
    # every kernel of both passes (forward and backward) under the interpreter, on a small odd-sized case
    x = make_inputs(1, 40, 1, 12, 10, 6, torch.float32, num_states=1)
    check(chunk_gsa, x, "triton", tol(torch.float32, 5), scale=0.5)


@pytest.mark.slow
def test_chunk_triton():
    x = make_inputs(2, 63, 2, 20, 24, 12, torch.float32, num_states=2)
    check(chunk_gsa, x, "triton", tol(torch.float32, 5), scale=0.5)


@pytest.mark.slow
def test_chunk_half_and_strong_decay_triton():
    # fp16 inputs; then log gates ~ -10 per token (chunk cumsums ~ -600): only differences are exponentiated
    check(chunk_gsa, make_inputs(1, 100, 1, 36, 20, 16, torch.float16, num_states=1), "triton", tol(torch.float16, 4))
    x = make_inputs(1, 40, 1, 20, 12, 10, torch.float32, num_states=1, strength=10.0)
    check(chunk_gsa, x, "triton", tol(torch.float32, 5))


def test_cpu_chunked_form_matches_recurrence_float64():
    x = make_inputs(1, 70, 2, 20, 12, 9, torch.float64, num_states=1, strength=3.0)
    check(naive_chunk_gsa, x, "torch", tol(torch.float64))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.slow), "torch"])
def test_varlen_with_length_one_sequences(backend):
    lengths = [1, 30, 1, 13]
    x = make_inputs(1, sum(lengths), 1, 20, 12, 10, torch.float32, num_states=len(lengths))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    with using(backend):
        o, ht = call(chunk_gsa, x, cu_seqlens=cu)
    ref_x = {n: to_reference(t) for n, t in x.items()}
    outs, states = [], []
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):  # each sequence alone, float64
        piece = {n: t[:, a:b] if n in TOKENS else t[i : i + 1] for n, t in ref_x.items()}
        o_i, ht_i = call(naive_recurrent_gsa, piece)
        outs.append(o_i)
        states.append(ht_i)
    ref_o, ref_ht = torch.cat(outs, 1), tuple(torch.cat(p, 0) for p in zip(*states))
    assert_close("o", ref_o, o, tol(torch.float32, 5))
    for i in range(2):
        assert_close(f"ht[{i}]", ref_ht[i], ht[i], tol(torch.float32, 5))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    assert_grads_close(x, ref_x, (o, *ht), (ref_o, *ref_ht), grad_outputs, tol(torch.float32, 5))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.slow), "torch"])
def test_fused_recurrent_varlen(backend):
    x = make_inputs(1, 45, 2, 20, 12, 10, torch.float32, num_states=3)
    cu = torch.tensor([0, 1, 30, 45], dtype=torch.int64, device=DEVICE)
    check(fused_recurrent_gsa, x, backend, tol(torch.float32, 5), cu_seqlens=cu)


def test_gqa_shares_the_key_heads_states():
    # HQ = 4 query heads over H = 2 key heads: the same as repeating k, v, s, g (and h0) per group by hand
    x = make_inputs(2, 30, 2, 12, 10, 6, torch.float64, num_states=2, HQ=4)
    o, (hk, hv) = call(chunk_gsa, x)
    rep = {n: (t.repeat_interleave(2, dim=2) if n in TOKENS[1:] else t) for n, t in x.items() if n in TOKENS}
    h0 = tuple(x[n].repeat_interleave(2, dim=1) for n in ("hk0", "hv0"))
    ref_o, (ref_hk, ref_hv) = naive_recurrent_gsa(*rep.values(), initial_state=h0, output_final_state=True)
    assert_close("o", ref_o, o, tol(torch.float64))
    assert_close("hk", ref_hk[:, ::2], hk, tol(torch.float64))
    assert_close("hv", ref_hv[:, 1::2], hv, tol(torch.float64))  # every head of a group holds the same state


@pytest.mark.slow
@pytest.mark.parametrize("strength", [1.0, 10.0])
def test_value_gated_stage_triton(strength):
    # the value-side gate alone (GSA's first pass): S_t = S_{t-1} diag(exp(gv_t)) + k_t^T v_t, with odd sizes
    q, k, v = torch.randn(1, 100, 2, 20), torch.randn(1, 100, 2, 20), torch.randn(1, 100, 2, 30)
    gv, h0 = F.logsigmoid(torch.randn(1, 100, 2, 30)) * strength, torch.randn(3, 2, 20, 30)
    cu = torch.tensor([0, 1, 64, 100], dtype=torch.int32)
    x = {n: t.to(DEVICE).requires_grad_() for n, t in dict(q=q, k=k, v=v, gv=gv, h0=h0).items()}
    with using("triton"):
        o, ht = chunk_value_gated(x["q"], x["k"], x["v"], x["gv"], 0.3, x["h0"], True, cu.to(DEVICE))
    ref_x = {n: to_reference(t) for n, t in x.items()}
    ref_o, ref_ht = recurrent_gated_torch_op(
        ref_x["q"], ref_x["k"], ref_x["v"], gv=ref_x["gv"], scale=0.3, initial_state=ref_x["h0"],
        output_final_state=True, cu_seqlens=cu.to(DEVICE),
    )  # fmt: skip
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))
    grad_outputs = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(x, ref_x, (o, ht), (ref_o, ref_ht), grad_outputs, tol(torch.float32, 5))


def test_errors_name_the_argument():
    x = {n: t.detach() for n, t in make_inputs(1, 8, 2, 4, 6, 3, torch.float32, num_states=1).items()}
    q, k, v, s, g = (x[n] for n in TOKENS)
    with pytest.raises(ValueError, match=r"^s has shape \[1, 8, 2\]"):
        chunk_gsa(q, k, v, s[..., 0], g)
    with pytest.raises(ValueError, match=r"^g has shape \[1, 8, 2\]"):
        chunk_gsa(q, k, v, s, g[..., 0])
    with pytest.raises(ValueError, match="q has 3 heads, not a multiple of k's 2 heads"):
        chunk_gsa(q[:, :, [0, 1, 0]], k, v, s, g)
    with pytest.raises(ValueError, match=r"initial_state has 1 tensors, expected \(hk, hv\)$"):
        chunk_gsa(q, k, v, s, g, initial_state=(x["hk0"],))
    with pytest.raises(ValueError, match=r"^initial_state\[1\] \(hv\) has shape \[1, 2, 6, 3\]"):
        fused_recurrent_gsa(q, k, v, s, g, initial_state=(x["hk0"], x["hv0"].transpose(-1, -2)))
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        chunk_gsa(q[:1], k[:1], v[:1], s[:1], g[:1], cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_gsa(q, k, v, s, g, cu_seqlens=torch.tensor([0, 5, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="checkpoint_level=3"):
        chunk_gsa(q, k, v, s, g, checkpoint_level=3)


GPU_CASES = [
    (2, 2048, 4, 64, 64, 64, torch.bfloat16),
    (1, 1000, 2, 100, 100, 60, torch.float32),
    (4, 512, 8, 128, 128, 64, torch.float16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, K, V, M, dtype", GPU_CASES)
def test_chunk_gpu(B, T, H, K, V, M, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    x = make_inputs(B, T, H, K, V, M, dtype, num_states=B)
    check(chunk_gsa, x, "triton", tol(dtype, 4), reference=naive_chunk_gsa)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_varlen_gpu(dtype):
    lengths = [1, 3000, 17, 64, 1000]
    x = make_inputs(1, sum(lengths), 4, 64, 64, 64, dtype, num_states=len(lengths))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    check(chunk_gsa, x, "triton", tol(dtype, 4), reference=naive_chunk_gsa, cu_seqlens=cu)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_recurrent_gpu(dtype):
    x = make_inputs(32, 16, 8, 64, 64, 64, dtype, num_states=32)
    check(fused_recurrent_gsa, x, "triton", tol(dtype, 4))
