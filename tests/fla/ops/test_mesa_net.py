"""MesaNet ops against float64 token-by-token references (CG and exact solve), on both backends."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops.mesa_net import (
    chunk_mesa_net,
    fused_recurrent_mesa_net,
    mesa_net_decoding_one_step,
    naive_mesa_net,
    naive_mesa_net_decoding_one_step,
    naive_mesa_net_exact,
)
from tests.harness import BACKENDS, DEVICE, assert_close, near_zero_or_one, tol, using

NAMES = ("q", "k", "v", "g", "beta", "lamb", "h_kk_init", "h_kv_init")


def make_inputs(B, T, H, K, V, dtype, num_states=None, q_scale=1.0, states=True):
    """Unit-norm q (times ``q_scale``) and k, decays in (0, 1), beta in (0, 1), lamb in (0.5, 1.5); a symmetric
    PSD ``h_kk_init`` and a random ``h_kv_init`` for ``num_states`` sequences (default ``B``); leaves with grads."""
    n = B if num_states is None else num_states
    a = torch.randn(n, H, K, K, dtype=torch.float64)
    t = {
        "q": F.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1) * q_scale,
        "k": F.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1),
        "v": torch.randn(B, T, H, V, dtype=torch.float64),
        "g": F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64) + 2),
        "beta": torch.rand(B, T, H, dtype=torch.float64),
        "lamb": torch.rand(H, K, dtype=torch.float64) + 0.5,
        "h_kk_init": a @ a.transpose(-1, -2) / K if states else None,
        "h_kv_init": torch.randn(n, H, K, V, dtype=torch.float64) if states else None,
    }
    low = {"q", "k", "v"}  # the inputs in the test dtype; gates, lamb and states stay float32
    return {
        k_: None if x is None else x.to(dtype if k_ in low else torch.float32).to(DEVICE).requires_grad_()
        for k_, x in t.items()
    }


def as_float64(inputs):
    return {k: None if x is None else x.detach().double().requires_grad_() for k, x in inputs.items()}


def grads(outs, inputs, douts):
    leaves = [x for x in inputs.values() if x is not None]
    pairs = [(o, d) for o, d in zip(outs, douts) if o is not None]
    got = torch.autograd.grad([o for o, _ in pairs], leaves, [d for _, d in pairs])
    return dict(zip([k for k, x in inputs.items() if x is not None], got))


def run_chunk(inputs, **kw):
    i = inputs
    return chunk_mesa_net(
        i["q"], i["k"], i["v"], i["g"], i["beta"], i["lamb"], i["h_kk_init"], i["h_kv_init"],
        output_final_state=True, **kw,
    )  # fmt: skip


def check_chunk_against_float64(inputs, backend, ratio, **kw):
    """Output, both final states and every gradient of ``chunk_mesa_net`` on ``backend`` against the same
    pipeline in float64 (the PyTorch path, itself checked against the token-by-token references below)."""
    ref_in = as_float64(inputs)
    ref = run_chunk(ref_in, **kw)
    douts = [torch.randn_like(r) for r in ref]
    with using(backend):
        out = run_chunk(inputs, **kw)
        got = grads(out, inputs, [d.to(o.dtype) for d, o in zip(douts, out)])
    want = grads(ref, ref_in, douts)
    for name, a, b in zip(("o", "h_kk", "h_kv"), ref, out):
        assert_close(name, a, b, ratio)
    for name in want:
        assert_close(f"d{name}", want[name], got[name], ratio)


def test_cg_converges_to_the_exact_solve_float64():
    # the CG guard eps = 1e-5 is absolute: unit queries stop ~1e-4 short, larger ones converge (K = 20 < 30 steps)
    inputs = as_float64(make_inputs(2, 40, 2, 20, 12, torch.float64, q_scale=1000.0))
    args = [inputs[n] for n in ("q", "k", "v", "g", "lamb", "beta", "h_kk_init", "h_kv_init")]
    exact = naive_mesa_net_exact(*args)
    for steps, ratio in ((30, 1e-6), (5, None)):
        cg = naive_mesa_net(*args, max_CG_iteration=steps)
        if ratio is None:
            with pytest.raises(AssertionError):  # too few steps: far from converged
                assert_close("o", exact[0], cg[0], 1e-3)
        else:
            for name, a, b in zip(("o", "h_kk", "h_kv"), exact, cg):
                assert_close(name, a, b, ratio)


def test_chunked_form_matches_token_by_token_cg_float64():
    # T = 100 (two chunks, the second partial), K = 20, V = 12: the PyTorch chunked path == the step-by-step CG
    inputs = as_float64(make_inputs(2, 100, 2, 20, 12, torch.float64))
    o, h_kk, h_kv = run_chunk(inputs)
    args = [inputs[n] for n in ("q", "k", "v", "g", "lamb", "beta", "h_kk_init", "h_kv_init")]
    ref = naive_mesa_net(*args, max_CG_iteration=30)
    for name, a, b in zip(("o", "h_kk", "h_kv"), ref, (o, h_kk, h_kv)):
        assert_close(name, a, b, tol(torch.float64))


def test_gradients_are_those_of_the_exact_solve_float64():
    # the backward differentiates through the solve as an exact one: with converged CG (q scaled up) every
    # gradient equals float64 autograd through torch.linalg.solve (measured <= 7e-6)
    inputs = as_float64(make_inputs(2, 70, 2, 20, 12, torch.float64, q_scale=100.0))
    out = run_chunk(inputs)
    args = [inputs[n] for n in ("q", "k", "v", "g", "lamb", "beta", "h_kk_init", "h_kv_init")]
    ref = naive_mesa_net_exact(*args)
    douts = [torch.randn_like(r) * s for r, s in zip(ref, (100.0, 1.0, 1.0))]
    got, want = grads(out, inputs, douts), grads(ref, inputs, douts)
    assert_close("o", ref[0], out[0], 5e-5)
    for name in want:
        assert_close(f"d{name}", want[name], got[name], 5e-5)


def test_long_sequence_strong_decay_extreme_beta():
    # T = 4096 on the CPU path: log decays from about -20 to ~0 per token and beta within 1e-4 of 0 or 1, against the
    # same pipeline in float64 (output, both final states, every gradient): nothing overflows or drifts over the
    # sequence's chunks
    inputs = make_inputs(1, 4096, 2, 16, 8, torch.float32)
    with torch.no_grad():
        inputs["g"].copy_(F.logsigmoid(torch.randn_like(inputs["g"])) * 5)
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-4))
    check_chunk_against_float64(inputs, "torch", tol(torch.float32, 10))  # measured <= 3.4e-6


SLOW_TRITON = pytest.param("triton", marks=pytest.mark.slow)


@pytest.mark.parametrize(
    "backend, dtype, T, K, V",
    [
        ("torch", torch.float32, 63, 20, 12),
        ("triton", torch.float32, 63, 20, 12),
        ("torch", torch.float16, 100, 36, 20),
        pytest.param("triton", torch.float16, 100, 36, 20, marks=pytest.mark.slow),
    ],
)
def test_chunk(backend, dtype, T, K, V):
    ratio = tol(torch.float32, 20) if dtype == torch.float32 else 2e-2
    check_chunk_against_float64(make_inputs(2, T, 2, K, V, dtype), backend, ratio)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_qk_l2norm_without_initial_state(backend):
    # length-1 and empty sequences, no initial states, q / k normalized inside the op
    lens = [1, 70, 0, 9]
    cu = torch.tensor([0, 1, 71, 71, 80], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lens), 1, 20, 12, torch.float32, num_states=len(lens), states=False)
    inputs["q"] = (inputs["q"].detach() * 3).requires_grad_()
    check_chunk_against_float64(inputs, backend, tol(torch.float32, 20), cu_seqlens=cu, use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("backend", ["torch", SLOW_TRITON])
def test_chunk_varlen_equals_each_sequence(backend):
    lens = [1, 70, 29]
    cu = torch.tensor([0, 1, 71, 100], dtype=torch.int64, device=DEVICE)
    inputs = make_inputs(1, sum(lens), 2, 20, 12, torch.float32, num_states=len(lens))
    with using(backend), torch.no_grad():
        o, h_kk, h_kv = run_chunk(inputs, cu_seqlens=cu)
        for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            piece = {
                n: x[:, a:b] if x.dim() > 2 and n not in ("h_kk_init", "h_kv_init") else x for n, x in inputs.items()
            }
            piece["h_kk_init"], piece["h_kv_init"] = inputs["h_kk_init"][i : i + 1], inputs["h_kv_init"][i : i + 1]
            o_i, kk_i, kv_i = run_chunk(piece)
            assert_close(f"o of sequence {i}", o_i, o[:, a:b], tol(torch.float32, 20))
            assert_close(f"h_kk of sequence {i}", kk_i, h_kk[i : i + 1], tol(torch.float32, 20))
            assert_close(f"h_kv of sequence {i}", kv_i, h_kv[i : i + 1], tol(torch.float32, 20))


@pytest.mark.parametrize(
    "backend, jacobi_init",
    [("torch", False), ("torch", True), ("triton", False), pytest.param("triton", True, marks=pytest.mark.slow)],
)
def test_fused_recurrent(backend, jacobi_init):
    lens = [1, 7, 4]
    cu = torch.tensor([0, 1, 8, 12], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lens), 2, 20, 12, torch.float32, num_states=len(lens))
    with using(backend), torch.no_grad():
        o, h_kk, h_kv = fused_recurrent_mesa_net(
            *[inputs[n] for n in NAMES], output_final_state=True, cu_seqlens=cu, jacobi_init=jacobi_init
        )
    ref_in = as_float64(inputs)
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        args = [ref_in[n][:, a:b] for n in ("q", "k", "v", "g")] + [ref_in["lamb"], ref_in["beta"][:, a:b]]
        ref = naive_mesa_net(
            *args, ref_in["h_kk_init"][i : i + 1], ref_in["h_kv_init"][i : i + 1], jacobi_init=jacobi_init
        )
        for name, want, got in zip(("o", "h_kk", "h_kv"), ref, (o[:, a:b], h_kk[i : i + 1], h_kv[i : i + 1])):
            assert_close(f"{name} of sequence {i}", want, got, tol(torch.float32, 20))


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoding_one_step_and_chunk_agree(backend):
    # fla's one-step API (Jacobi start) against its reference; and decoding from 0 continues the chunk op exactly
    inputs = make_inputs(2, 9, 1, 20, 12, torch.float32)
    q, k, v, g, beta, lamb, h_kk0, h_kv0 = (inputs[n].detach() for n in NAMES)
    with using(backend), torch.no_grad():
        o, kk, kv = mesa_net_decoding_one_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], lamb, beta[:, 0], h_kk0, h_kv0)
        o_chunk, kk8, kv8 = chunk_mesa_net(q[:, :8], k[:, :8], v[:, :8], g[:, :8], beta[:, :8], lamb, h_kk0, h_kv0,
                                           output_final_state=True)  # fmt: skip
        o_last, _, _ = fused_recurrent_mesa_net(q[:, 8:], k[:, 8:], v[:, 8:], g[:, 8:], beta[:, 8:], lamb, kk8, kv8)
        o_all, _, _ = chunk_mesa_net(q, k, v, g, beta, lamb, h_kk0, h_kv0)
    ref = naive_mesa_net_decoding_one_step(
        *(x.double() for x in (q[:, 0], k[:, 0], v[:, 0], g[:, 0], lamb, beta[:, 0], h_kk0, h_kv0))
    )
    for name, want, got in zip(("o", "h_kk", "h_kv"), ref, (o, kk, kv)):
        assert_close(name, want, got, tol(torch.float32, 20))
    assert_close("decoded token", o_all[:, 8:], o_last, tol(torch.float32, 20))
    assert_close("prefix", o_all[:, :8], o_chunk, tol(torch.float32, 20))


def test_errors_name_the_argument():
    i = {n: x.detach() for n, x in make_inputs(2, 8, 2, 16, 8, torch.float32).items()}
    args = lambda **over: [over.get(n, i[n]) for n in NAMES]  # noqa: E731
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 15\]"):
        chunk_mesa_net(*args(k=i["k"][..., :15]))
    with pytest.raises(ValueError, match=r"g has shape \[2, 8, 2, 1\], expected \[2, 8, 2\]"):
        chunk_mesa_net(*args(g=i["g"][..., None]))
    with pytest.raises(ValueError, match=r"lamb has shape \[16\], expected \[2, 16\]"):
        chunk_mesa_net(*args(lamb=i["lamb"][0]))
    with pytest.raises(ValueError, match=r"h_kk_init has shape \[2, 2, 16, 8\]"):
        chunk_mesa_net(*args(h_kk_init=i["h_kv_init"]))
    with pytest.raises(ValueError, match="max_CG_iteration=-1 must be an int >= 0"):
        chunk_mesa_net(*args(), max_CG_iteration=-1)
    flat = [
        None if x is None else x[:1].flatten(0, 1)[None] if n not in ("lamb",) else x for n, x in zip(NAMES, args())
    ]
    flat[6:] = [None, None]
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        chunk_mesa_net(*flat, cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_mesa_net(*flat, cu_seqlens=torch.tensor([0, 5, 3, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_mesa_net(*flat, cu_seqlens=torch.tensor([0, 5, 7], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"g has shape \[2, 2, 1\], expected 2 dims"):
        mesa_net_decoding_one_step(i["q"][:, 0], i["k"][:, 0], i["v"][:, 0], i["g"][:, 0, :, None], i["lamb"],
                                   i["beta"][:, 0], i["h_kk_init"], i["h_kv_init"])  # fmt: skip


def test_triton_rejects_wide_heads_before_launch():
    i = {n: None if x is None else x.detach() for n, x in make_inputs(1, 4, 1, 130, 8, torch.float32).items()}
    with using("triton"), pytest.raises(ValueError, match="head dim K=130 > 128"):
        chunk_mesa_net(*[i[n] for n in NAMES])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, ratio", [(torch.float32, 2e-4), (torch.bfloat16, 5e-2)])
def test_chunk_gpu_sizes(dtype, ratio):
    # the widest heads (K = V = 128), 1000 packed tokens (17 chunks) with a length-1 sequence, q / k normalized in
    # the op: outputs, states and every gradient against the float64 pipeline
    cu = torch.tensor([0, 1, 64, 564, 1000], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, 1000, 4, 128, 128, dtype, num_states=4)
    check_chunk_against_float64(inputs, "triton", ratio, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
def test_fused_recurrent_gpu_sizes():
    inputs = make_inputs(8, 16, 4, 128, 128, torch.float32)
    with torch.no_grad():
        got = fused_recurrent_mesa_net(*[inputs[n] for n in NAMES], output_final_state=True)
    ref = naive_mesa_net(
        *[as_float64(inputs)[n] for n in ("q", "k", "v", "g", "lamb", "beta", "h_kk_init", "h_kv_init")]
    )
    for name, want, out in zip(("o", "h_kk", "h_kv"), ref, got):
        assert_close(name, want, out, 2e-4)
