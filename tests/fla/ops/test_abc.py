"""chunk_abc / fused_recurrent_abc: the paper's softmax form, float64 gradients, varlen and exact decoding."""

import pytest
import torch

from fla.ops.abc import chunk_abc, fused_recurrent_abc, naive_recurrent_abc, naive_softmax_abc
from fla.ops.gsa import additive_gate, naive_recurrent_gsa
from tests.harness import DEVICE, assert_close, assert_grads_close, to_reference, tol, using

TOKENS = ("q", "k", "v", "s")


def make_inputs(B, T, H, K, V, M, dtype=torch.float32, num_states=None, with_z=False):
    """Leaf tensors requiring grad: q, k ``[B, T, H, K]``, v, slot logits s ``[B, T, H, M]`` (spread wide, so
    the normalizer matters) and, with ``num_states``, hk0, hv0 (and z0 ``[N, H, M]`` with ``with_z``)."""
    x = {
        "q": torch.randn(B, T, H, K, device=DEVICE),
        "k": torch.randn(B, T, H, K, device=DEVICE),
        "v": torch.randn(B, T, H, V, device=DEVICE),
        "s": 3 * torch.randn(B, T, H, M, device=DEVICE),
    }
    x = {n: t.to(dtype) for n, t in x.items()}
    if num_states is not None:
        x["hk0"] = torch.randn(num_states, H, K, M, device=DEVICE)
        x["hv0"] = torch.randn(num_states, H, M, V, device=DEVICE)
        if with_z:
            x["z0"] = torch.randn(num_states, H, M, device=DEVICE)
    return {n: t.requires_grad_() for n, t in x.items()}


def states_of(x):
    names = [n for n in ("hk0", "hv0", "z0") if n in x]
    return tuple(x[n] for n in names) or None


def test_matches_the_softmax_form():
    # Kslots_t = sum_j<=t exp(s_j) k_j / sum_j<=t exp(s_j) (likewise V), o = softmax(q Kslots^T / sqrt(K)) Vslots
    x = make_inputs(2, 70, 2, 12, 10, 7, torch.float64)
    o, _ = chunk_abc(*(x[n] for n in TOKENS))
    assert_close("o", naive_softmax_abc(*(x[n] for n in TOKENS)), o, tol(torch.float64))


@pytest.mark.parametrize("with_z", [False, True])
def test_chunk_gradients_against_float64(with_z):
    x = make_inputs(1, 40, 2, 12, 10, 6, num_states=1, with_z=with_z)
    o, ht = chunk_abc(*(x[n] for n in TOKENS), initial_state=states_of(x), output_final_state=True)
    assert len(ht) == 3 and ht[2].shape == (1, 2, 6)
    ref_x = {n: to_reference(t) for n, t in x.items()}
    ref_o, ref_ht = naive_recurrent_abc(
        *(ref_x[n] for n in TOKENS), initial_state=states_of(ref_x), output_final_state=True
    )
    assert_close("o", ref_o, o, tol(torch.float32, 5))
    for i in range(3):
        assert_close(f"ht[{i}]", ref_ht[i], ht[i], tol(torch.float32, 5))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    assert_grads_close(x, ref_x, (o, *ht), (ref_o, *ref_ht), grad_outputs, tol(torch.float32, 5))


def test_state_without_z_keeps_the_first_decay_at_zero():
    # fla 0.6.0's convention for an (hk, hv) state: the first token does not decay it (g_0 = 0)
    x = {n: t.detach().double() for n, t in make_inputs(1, 9, 1, 4, 5, 3, num_states=1).items()}
    s, g, _ = additive_gate(x["s"])
    assert torch.equal(g[:, 0], torch.zeros_like(g[:, 0]))
    o, _ = chunk_abc(*(x[n] for n in TOKENS), initial_state=(x["hk0"], x["hv0"]))
    ref, _ = naive_recurrent_gsa(x["q"], x["k"], x["v"], s, g, initial_state=(x["hk0"], x["hv0"]))
    assert_close("o", ref, o, tol(torch.float64))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.slow), "torch"])
def test_prefill_then_decode_equals_one_call(backend):
    # the state (hk, hv, z) carries the normalizer: prefill + token-by-token decoding == one pass over it all
    x = {n: t.detach() for n, t in make_inputs(2, 30, 2, 12, 10, 6).items()}
    q, k, v, s = (x[n] for n in TOKENS)
    with using(backend):
        ref, _ = chunk_abc(q, k, v, s)
        outs, state = [], None
        o, state = chunk_abc(q[:, :20], k[:, :20], v[:, :20], s[:, :20], output_final_state=True)
        outs.append(o)
        for t in range(20, 30):
            piece = (x_[:, t : t + 1] for x_ in (q, k, v, s))
            o, state = fused_recurrent_abc(*piece, initial_state=state, output_final_state=True)
            outs.append(o)
    assert_close("o", ref, torch.cat(outs, 1), tol(torch.float32, 2))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=pytest.mark.slow), "torch"])
def test_varlen_equals_each_sequence(backend):
    lengths = [1, 30, 1, 17]
    x = make_inputs(1, sum(lengths), 1, 12, 10, 6, num_states=len(lengths), with_z=True)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    with using(backend):
        o, ht = chunk_abc(*(x[n] for n in TOKENS), initial_state=states_of(x), output_final_state=True, cu_seqlens=cu)
    ref_x = {n: to_reference(t) for n, t in x.items()}
    outs, states = [], []
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        piece = {n: t[:, a:b] if n in TOKENS else t[i : i + 1] for n, t in ref_x.items()}
        o_i, ht_i = naive_recurrent_abc(
            *(piece[n] for n in TOKENS), initial_state=states_of(piece), output_final_state=True
        )
        outs.append(o_i)
        states.append(ht_i)
    ref_o, ref_ht = torch.cat(outs, 1), tuple(torch.cat(p, 0) for p in zip(*states))
    assert_close("o", ref_o, o, tol(torch.float32, 5))
    for i in range(3):
        assert_close(f"ht[{i}]", ref_ht[i], ht[i], tol(torch.float32, 5))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    assert_grads_close(x, ref_x, (o, *ht), (ref_o, *ref_ht), grad_outputs, tol(torch.float32, 5))


def test_errors_name_the_argument():
    x = {n: t.detach() for n, t in make_inputs(1, 8, 2, 4, 6, 3, num_states=1).items()}
    q, k, v, s = (x[n] for n in TOKENS)
    with pytest.raises(ValueError, match=r"^s has shape \[1, 8, 3\]"):
        chunk_abc(q, k, v, s[:, :, 0])
    with pytest.raises(ValueError, match=r"^initial_state\[2\] \(z\) has shape \[1, 2\]"):
        chunk_abc(q, k, v, s, initial_state=(x["hk0"], x["hv0"], x["hk0"][..., 0, 0]))
    with pytest.raises(ValueError, match=r"expected \(hk, hv\) or \(hk, hv, z\)"):
        fused_recurrent_abc(q, k, v, s, initial_state=(x["hk0"],))
    with pytest.raises(TypeError, match="s has dtype torch.float16 but q has dtype torch.float32"):
        chunk_abc(q, k, v, s.half())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_gpu(dtype):
    lengths = [1, 2000, 17, 500]
    x = make_inputs(1, sum(lengths), 4, 64, 64, 64, dtype, num_states=len(lengths), with_z=True)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    o, ht = chunk_abc(*(x[n] for n in TOKENS), initial_state=states_of(x), output_final_state=True, cu_seqlens=cu)
    ref_x = {n: to_reference(t) for n, t in x.items()}
    with using("torch"):
        ref_o, ref_ht = chunk_abc(
            *(ref_x[n] for n in TOKENS), initial_state=states_of(ref_x), output_final_state=True, cu_seqlens=cu
        )
    assert_close("o", ref_o, o, tol(dtype, 4))
    for i in range(3):
        assert_close(f"ht[{i}]", ref_ht[i], ht[i], tol(dtype, 4))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    assert_grads_close(x, ref_x, (o, *ht), (ref_o, *ref_ht), grad_outputs, tol(dtype, 4))


def test_slot_gate_stays_exact_over_long_sequences():
    """The Triton slot gate in float32 over 2000 tokens of wide logits, fed to the float64 chunk form: its output
    within 3e-6 of the all-float64 one. Every ``z_t`` carries into every later output (as ``s'`` and the decays
    ``g``): a gate that rounded ``z`` at each token (``z <- logaddexp(z, s)``) drifted by ~1e-5 over such a
    sequence and gave 3.0e-5 here (and the GPU float32 test of ``chunk_abc``, T = 2000, exceeded its bound with
    it); the running ``(max, sum)`` form gives 1.3e-6."""
    from fla.ops.gsa import chunk_gsa
    from fla.ops.gsa.gate_scan import additive_gate_triton

    T, H, D, M = 2000, 1, 16, 8
    q, k, v = (torch.randn(1, T, H, D, dtype=torch.float64, device=DEVICE) for _ in range(3))
    s = 3 * torch.randn(1, T, H, M, device=DEVICE)
    with using("triton"):
        s_n, g, _ = additive_gate_triton(s)
    with using("torch"):
        ref, _ = chunk_gsa(q, k, v, *additive_gate(s.double())[:2])
        o, _ = chunk_gsa(q, k, v, s_n.double(), g.double())
    assert_close("o", ref, o, 3e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("varlen, with_z", [(False, False), (False, True), (True, False), (True, True)])
def test_slot_gate_scan_kernels(dtype, varlen, with_z):
    """The Triton slot gate (gate_scan.py: running log-sum-exp over 64-token tiles, reverse scan backward) vs the
    float64 PyTorch gate: s', g, the final z and the gradients of s and z0 (from all three outputs); T spans three
    tiles; varlen with length-1 (and, with z0, length-0) sequences; wide logits (the normalizer matters), some 180 apart
    in one tile."""
    from fla.ops.gsa.gate_scan import additive_gate_triton

    # an empty sequence's z is z0 (no z0: -inf, which the finite-output checks here would reject)
    lengths = ([1, 130, 0, 40, 1] if with_z else [1, 130, 40, 1]) if varlen else [150, 150]
    B, T = (1, sum(lengths)) if varlen else (2, 150)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    s = 4 * torch.randn(B, T, 3, 5, device=DEVICE)
    s[:, 5, 0], s[:, 7, 1], s[:, 9, 2] = 90.0, -90.0, 60.0  # a tile's logits 180 apart: exp(s - max) underflows
    x = {"s": s.to(dtype).requires_grad_()}
    if with_z:
        x["z0"] = torch.randn(len(lengths), 3, 5, device=DEVICE, requires_grad=True)
    ref = {n: to_reference(t) for n, t in x.items()}
    cu_arg = cu if varlen else None
    with using("triton"):
        out = additive_gate_triton(x["s"], cu_arg, x.get("z0"))
    expected = additive_gate(ref["s"], cu_arg, ref.get("z0"))
    assert out[0].dtype == dtype and out[1].dtype == out[2].dtype == torch.float32
    for name, a, b in zip(("s'", "g", "z"), expected, out, strict=True):
        assert_close(name, a, b, tol(dtype))
    grad_outputs = tuple(torch.randn_like(t) for t in expected)
    assert_grads_close(x, ref, out, expected, grad_outputs, tol(dtype, 2))
