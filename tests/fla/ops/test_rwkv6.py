"""chunk_rwkv6 / fused_recurrent_rwkv6 against a float64 step-by-step reference written here."""

from __future__ import annotations

import pytest
import torch

from fla.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6, naive_chunk_rwkv6, naive_recurrent_rwkv6
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using


def reference(r, k, v, w, u, scale, h0, cu_seqlens=None):
    """The recurrence, one token at a time, in float64: ``o_t = scale r_t (S + diag(u) k_t v_t^T)``,
    ``S <- diag(exp(w_t)) S + k_t v_t^T``; states restart (from ``h0[n]``) at each sequence."""
    B, T, H, K = r.shape
    bounds = [(b, 0, T) for b in range(B)] if cu_seqlens is None else [
        (0, int(a), int(e)) for a, e in zip(cu_seqlens[:-1], cu_seqlens[1:])
    ]  # fmt: skip
    outs = [[None] * T for _ in range(B)]
    states = []
    for n, (b, start, end) in enumerate(bounds):
        S = torch.zeros(H, K, v.shape[-1], dtype=torch.float64) if h0 is None else h0[n]
        for t in range(start, end):
            kv = k[b, t, :, :, None] * v[b, t, :, None, :]
            outs[b][t] = torch.einsum("hk,hkv->hv", r[b, t] * scale, S + u[..., None] * kv)
            S = S * w[b, t].exp()[..., None] + kv
        states.append(S)
    o = torch.stack([torch.stack(row) for row in outs])
    return o, torch.stack(states)


def make_inputs(B, T, H, K, V, dtype, num_states=None, strength=1.0, device=DEVICE):
    """Random leaves: r, k, v, w (log decays ``-exp(x)``, times ``strength``), u and h0 (float32; float64
    for float64 inputs)."""
    x = {
        "r": torch.randn(B, T, H, K, device=device),
        "k": torch.randn(B, T, H, K, device=device),
        "v": torch.randn(B, T, H, V, device=device),
        "w": -torch.exp(torch.randn(B, T, H, K, device=device).clamp(max=1.5)) * strength * 0.5,
        "u": torch.randn(H, K, device=device),
    }
    x = {n: t.to(dtype) for n, t in x.items()}
    if num_states is not None:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        x["h0"] = torch.randn(num_states, H, K, V, device=device, dtype=state_dtype)
    return {n: t.requires_grad_() for n, t in x.items()}


def call(op, x, **kwargs):
    return op(x["r"], x["k"], x["v"], x["w"], x["u"], initial_state=x.get("h0"), output_final_state=True, **kwargs)


def check(op, x, backend, ratio, scale=None, cu_seqlens=None):
    """``op`` (with ``backend``) vs :func:`reference` (float64): o, final state and every gradient; outputs
    poisoned with NaN before the call (the conftest fixture)."""
    with using(backend):
        o, ht = call(op, x, scale=scale, cu_seqlens=cu_seqlens)
    ref = {n: to_reference(t).cpu() for n, t in x.items()}
    K = x["r"].shape[-1]
    ref_o, ref_ht = reference(
        ref["r"], ref["k"], ref["v"], ref["w"], ref["u"], K**-0.5 if scale is None else scale, ref.get("h0"),
        cu_seqlens,
    )  # fmt: skip
    assert o.dtype == x["v"].dtype and ht.dtype == (torch.float64 if o.dtype == torch.float64 else torch.float32)
    assert_close("o", ref_o, o.cpu(), ratio)
    assert_close("ht", ref_ht, ht.cpu(), ratio)
    grads = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(x, ref, (o, ht), (ref_o, ref_ht), tuple(g.to(o.device) for g in grads), ratio)


@pytest.mark.parametrize(
    "backend, B, T, H, K, V, dtype, strength",
    [("torch", 2, 63, 2, 20, 12, torch.float32, 1.0), ("triton", 2, 63, 2, 20, 12, torch.float32, 1.0),
     ("triton", 1, 100, 1, 36, 20, torch.float16, 1.0), ("triton", 1, 40, 1, 20, 24, torch.float32, 20.0),
     pytest.param("torch", 1, 100, 1, 36, 20, torch.float16, 1.0, marks=pytest.mark.slow),
     pytest.param("torch", 1, 70, 1, 20, 24, torch.float32, 20.0, marks=pytest.mark.slow)],
    ids=["torch-fp32-T63", "triton-fp32-T63", "triton-fp16-T100", "triton-steep", "torch-fp16-T100", "torch-steep"],
)  # fmt: skip
def test_chunk(backend, B, T, H, K, V, dtype, strength):
    # steep: log decays ~ -30 per token; only differences inside a sub-chunk are exponentiated
    x = make_inputs(B, T, H, K, V, dtype, num_states=B, strength=strength)
    check(chunk_rwkv6, x, backend, tol(dtype, 4), scale=0.7)


@pytest.mark.parametrize("backend", ["triton", pytest.param("torch", marks=pytest.mark.slow)])
def test_chunk_varlen(backend):
    lengths = [1, 68, 1, 12]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    x = make_inputs(1, sum(lengths), 2, 20, 12, torch.float32, num_states=len(lengths))
    check(chunk_rwkv6, x, backend, tol(torch.float32, 4), cu_seqlens=cu)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    cu = torch.tensor([0, 1, 30, 37], dtype=torch.int64, device=DEVICE)
    x = make_inputs(1, 37, 2, 20, 12, torch.float32, num_states=3)
    check(fused_recurrent_rwkv6, x, backend, tol(torch.float32, 4), scale=1.0, cu_seqlens=cu)


def test_cpu_forms_float64():
    x = make_inputs(2, 50, 2, 12, 10, torch.float64, num_states=2, strength=5.0)
    for op in (naive_chunk_rwkv6, naive_recurrent_rwkv6):
        check(op, x, "torch", tol(torch.float64))


def test_without_initial_state():
    x = make_inputs(1, 20, 1, 16, 16, torch.float32)
    with using("torch"):
        o, ht = chunk_rwkv6(x["r"], x["k"], x["v"], x["w"], x["u"])
    assert ht is None
    ref_o, _ = reference(*(to_reference(x[n]) for n in "rkvwu"), 16**-0.5, None)
    assert_close("o", ref_o, o, tol(torch.float32))


def test_errors_name_the_argument():
    r, k, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    w, u = -torch.rand(2, 8, 2, 16), torch.randn(2, 16)
    with pytest.raises(ValueError, match=r"u has shape \[1, 2, 16\], expected \[2, 16\]"):
        chunk_rwkv6(r, k, v, w, torch.randn(2, 16)[None])
    with pytest.raises(ValueError, match=r"u has shape \[3, 16\]"):
        chunk_rwkv6(r, k, v, w, torch.randn(3, 16))
    with pytest.raises(ValueError, match=r"w has shape \[2, 8, 2\], expected \[2, 8, 2, 16\]"):
        fused_recurrent_rwkv6(r, k, v, w[..., 0], u)
    with pytest.raises(ValueError, match=r"cu_seqlens"):
        chunk_rwkv6(r[:1], k[:1], v[:1], w[:1], u, cu_seqlens=torch.tensor([0, 5, 3]))
    with pytest.raises(ValueError, match=r"chunk_size=32"):
        chunk_rwkv6(r, k, v, w, u, chunk_size=32)
    with pytest.raises(TypeError, match=r"u has dtype torch.int64"):
        chunk_rwkv6(r, k, v, w, torch.ones(2, 16, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "B, T, H, D, dtype", [(4, 1024, 4, 64, torch.bfloat16), (2, 2048, 8, 128, torch.float16),
                          (2, 1000, 4, 100, torch.float32)]
)  # fmt: skip
def test_chunk_gpu(B, T, H, D, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself checked against the recurrence above)
    x = make_inputs(B, T, H, D, D, dtype, num_states=B)
    with using("triton"):
        o, ht = call(chunk_rwkv6, x)
    ref = {n: to_reference(t) for n, t in x.items()}
    ref_o, ref_ht = call(naive_chunk_rwkv6, ref)
    assert_close("o", ref_o, o, tol(dtype, 2))
    assert_close("ht", ref_ht, ht, tol(dtype, 2))
    grads = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(x, ref, (o, ht), (ref_o, ref_ht), grads, tol(dtype, 4))


@pytest.mark.gpu
def test_chunk_varlen_gpu():
    lengths = [1, 3000, 17, 64, 1000]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    x = make_inputs(1, sum(lengths), 4, 64, 64, torch.bfloat16, num_states=len(lengths))
    with using("triton"):
        o, ht = call(chunk_rwkv6, x, cu_seqlens=cu)
    ref = {n: to_reference(t) for n, t in x.items()}
    ref_o, ref_ht = call(naive_chunk_rwkv6, ref, cu_seqlens=cu)
    assert_close("o", ref_o, o, tol(torch.bfloat16, 2))
    assert_close("ht", ref_ht, ht, tol(torch.bfloat16, 2))
