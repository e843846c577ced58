"""chunk_comba / fused_recurrent_comba against a float64 step-by-step reference written from the definition."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fla.ops.comba import chunk_comba, fused_recurrent_comba, naive_chunk_comba, naive_recurrent_comba
from fla.ops.common.inputs import l2norm
from tests.fla.ops.gated import default_ratios
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, near_zero_or_one, to_reference, tol, using

TOKENS = ("q", "k", "v", "p", "g", "beta")


def reference(
    q,
    k,
    v,
    p,
    g,
    beta,
    scale=None,
    initial_state=None,
    output_final_state=True,
    use_qk_l2norm_in_kernel=False,
    cu_seqlens=None,
):
    """``S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - p_t^T S_{t-1})^T``, ``o_t = scale q_t^T S_t``, token by token
    (float64; q/k/p heads repeated to v's; one sequence per ``cu_seqlens`` piece)."""
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        outs, states = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = None if initial_state is None else initial_state[i : i + 1]
            piece = [t[:, a:b] for t in (q, k, v, p, g, beta)]
            o, s = reference(*piece, scale, h0, True, use_qk_l2norm_in_kernel)
            outs.append(o)
            states.append(s)
        return torch.cat(outs, 1), torch.cat(states, 0)
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm_in_kernel:
        q, k, p = l2norm(q), l2norm(k), l2norm(p)
    q, k, p = (t.repeat_interleave(HV // H, 2) for t in (q, k, p))
    S = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state
    outs = []
    for t in range(T):
        erase = torch.einsum("bhk,bhkv->bhv", p[:, t], S)  # p_t^T S_{t-1}, before the decay
        S = S * g[:, t].exp()[..., None, None]
        S = S + k[:, t, :, :, None] * (beta[:, t, :, None] * (v[:, t] - erase))[..., None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return (torch.stack(outs, 1) if outs else v.new_zeros(B, 0, HV, V)), S


def fused(q, k, v, p, g, beta, **kwargs):
    """fused_recurrent_comba in the chunk op's argument order (fla puts p before v there)."""
    return fused_recurrent_comba(q, k, p, v, g, beta, **kwargs)


def naive_recurrent(q, k, v, p, g, beta, **kwargs):
    """naive_recurrent_comba in the chunk op's argument order (fla puts beta before g there)."""
    return naive_recurrent_comba(q, k, v, p, beta, g, **kwargs)


def make_inputs(B, T, H, K, V, dtype, HV=None, strength=0.1, num_states=None, device=DEVICE):
    """Random leaves: q, k, p ``[B, T, H, K]``, v ``[B, T, HV, V]``, g (log decays times ``strength``) and beta
    ``[B, T, HV]``, h0 ``[num_states, HV, K, V]`` float32 (float64 for float64)."""
    HV = HV or H
    k = torch.randn(B, T, H, K, device=device)
    out = {
        "q": torch.randn(B, T, H, K, device=device),
        "k": k,
        "v": torch.randn(B, T, HV, V, device=device),
        "p": k * torch.rand(H, 1, device=device) + 0.3 * torch.randn(B, T, H, K, device=device),
        "g": F.logsigmoid(torch.randn(B, T, HV, device=device)) * strength,
        "beta": torch.rand(B, T, HV, device=device),
    }
    out = {n: t.to(dtype) for n, t in out.items()}
    if num_states is not None:
        out["h0"] = torch.randn(
            num_states, HV, K, V, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32
        )
    return {n: t.requires_grad_() for n, t in out.items()}


def call(op, inputs, **kwargs):
    o, ht = op(*(inputs[n] for n in TOKENS), initial_state=inputs.get("h0"), output_final_state=True, **kwargs)
    return o, ht


def check(op, inputs, backend, ratio, **kwargs):
    """``op`` (with ``backend``) vs :func:`reference` on float64 copies: o, the final state, every gradient."""
    bound = (lambda n: ratio.get(n, ratio["q"])) if isinstance(ratio, dict) else (lambda n: ratio)
    with using(backend):
        o, ht = call(op, inputs, **kwargs)
    ref_inputs = {n: to_reference(t) for n, t in inputs.items()}
    ref_o, ref_ht = call(reference, ref_inputs, **kwargs)
    assert o.dtype == inputs["v"].dtype and ht.dtype == (torch.float64 if o.dtype == torch.float64 else torch.float32)
    assert_close("o", ref_o, o, bound("o"))
    assert_close("ht", ref_ht, ht, bound("ht"))
    grad_out = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(inputs, ref_inputs, (o, ht), (ref_o, ref_ht), grad_out, {n: bound(n) for n in inputs})


def ratios(dtype, dg_scale=1.0):
    return {**default_ratios(dtype, 2, dg_scale), "p": tol(dtype, 2), "beta": tol(dtype, 2)}


def test_cpu_chunked_form_matches_recurrence_float64():
    # T = 70: two chunks, the second partial; 2 q/k/p heads for 4 value heads
    inputs = make_inputs(1, 70, 2, 20, 12, torch.float64, HV=4, num_states=1)
    check(naive_chunk_comba, inputs, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)
    check(partial(naive_chunk_comba, chunk_size=16), inputs, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)
    check(naive_recurrent, inputs, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)


def test_cpu_strong_decay_float64():
    # log gates ~ -20 per token: exp of chunk cumsums underflows, the exclusive erase gate G - g must stay exact;
    # beta at 1e-3 or 1 - 1e-3; unit keys given (no L2 norm in the op)
    inputs = make_inputs(1, 70, 1, 16, 8, torch.float64, strength=20.0, num_states=1)
    with torch.no_grad():
        for n in ("k", "p"):
            inputs[n].copy_(l2norm(inputs[n]))
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-3, dtype=torch.float64))
    check(chunk_comba, inputs, "torch", tol(torch.float64))


SLOW = pytest.mark.slow
OPS = [pytest.param(chunk_comba, id="chunk"), pytest.param(fused, id="fused_recurrent")]


@pytest.mark.parametrize(
    "backend, op, dtype, T, K, V",
    [
        ("triton", chunk_comba, torch.float32, 70, 20, 12),
        pytest.param("triton", fused, torch.float16, 33, 20, 12, marks=SLOW),
        *(
            pytest.param(b, op, *shape, marks=SLOW)
            for b in BACKENDS
            for op in (chunk_comba, fused)
            for shape in ((torch.float32, 63, 60, 36), (torch.float16, 100, 36, 20))
        ),
    ],
)
def test_ops(backend, op, dtype, T, K, V):
    inputs = make_inputs(1, T, 2, K, V, dtype, num_states=1)
    check(op, inputs, backend, ratios(dtype), use_qk_l2norm_in_kernel=True, scale=0.3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=SLOW)])
@pytest.mark.parametrize("op", OPS)
def test_varlen_grouped_heads(backend, op):
    # packed sequences with a length-1 and an empty one; 2 q/k/p heads for 4 value heads
    lengths = [1, 40, 0, 29]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 2, 20, 12, torch.float32, HV=4, num_states=len(lengths))
    check(op, inputs, backend, ratios(torch.float32), use_qk_l2norm_in_kernel=True, cu_seqlens=cu)


@SLOW
@pytest.mark.parametrize("op", OPS)
def test_triton_strong_decay_extreme_beta(op):
    # log decays ~ -4 per token, beta at 1e-3 or 1 - 1e-3; T = 70 leaves a partial last chunk
    inputs = make_inputs(1, 70, 1, 20, 12, torch.float32, strength=5.0, num_states=1)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-3))
    check(op, inputs, "triton", ratios(torch.float32, dg_scale=10), use_qk_l2norm_in_kernel=True)


def test_p_none_is_k_and_default_beta():
    inputs = {n: t.detach() for n, t in make_inputs(1, 20, 2, 16, 8, torch.float64, num_states=1).items()}
    q, k, v, g = inputs["q"], inputs["k"], inputs["v"], inputs["g"]
    o, ht = chunk_comba(q, k, v, None, g, initial_state=inputs["h0"], output_final_state=True)
    ref_o, ref_ht = reference(q, k, v, k, g, torch.ones_like(g), initial_state=inputs["h0"])
    assert_close("o", ref_o, o, tol(torch.float64))
    assert_close("ht", ref_ht, ht, tol(torch.float64))


def test_triton_decode_without_grad():
    # no gradient wanted: the single recurrent kernel with the L2 norm of q, k and p fused in
    inputs = {n: t.detach() for n, t in make_inputs(3, 2, 2, 60, 36, torch.float32, HV=4, num_states=3).items()}
    with torch.no_grad(), using("triton"):
        o, ht = call(fused, inputs, use_qk_l2norm_in_kernel=True)
    ref_o, ref_ht = call(reference, {n: t.double() for n, t in inputs.items()}, use_qk_l2norm_in_kernel=True)
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


FLA060_NAIVE = Path("/tmp/fla060_conf/fla/ops/comba/naive.py")


@pytest.mark.skipif(not FLA060_NAIVE.exists(), reason="fla 0.6.0's source is not at /tmp/fla060_conf")
def test_matches_fla060_chunk_formula():
    # fla 0.6.0's chunked PyTorch formula (its kernels' maths: the erase reads the state before the decay)
    spec = importlib.util.spec_from_file_location("fla060_comba_naive", FLA060_NAIVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = {n: t.detach() for n, t in make_inputs(2, 80, 2, 16, 12, torch.float64, num_states=2).items()}
    q, k, v, p, g, beta = (inputs[n] for n in TOKENS)
    k, p = l2norm(k), l2norm(p)
    ref_o, ref_ht = module.naive_chunk_comba(q, k, v, p, g, beta, initial_state=inputs["h0"], output_final_state=True)
    o, ht = chunk_comba(q, k, v, p, g, beta, initial_state=inputs["h0"], output_final_state=True)
    assert_close("o", ref_o.double(), o, 1e-6)
    assert_close("ht", ref_ht.double(), ht, 1e-6)


def test_errors_name_the_argument():
    x = make_inputs(2, 8, 2, 16, 8, torch.float32)
    q, k, v, p, g, beta = (x[n].detach() for n in TOKENS)
    with pytest.raises(ValueError, match=r"p has shape \[2, 8, 2, 15\], expected \[2, 8, 2, 16\]"):
        chunk_comba(q, k, v, p[..., :15], g, beta)
    with pytest.raises(TypeError, match="p has dtype torch.float16 but k has dtype torch.float32"):
        fused_recurrent_comba(q, k, p.half(), v, g, beta)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8\], expected \[2, 8, 2\]"):
        chunk_comba(q, k, v, p, g[..., 0], beta)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 8, 2, 1\], expected \[2, 8, 2\]"):
        fused_recurrent_comba(q, k, p, v, g, beta[..., None])
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_comba(q[:1], k[:1], v[:1], p[:1], g[:1], beta[:1], cu_seqlens=torch.tensor([0, 5, 3]))
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        chunk_comba(q[:1], k[:1], v[:1], p[:1], g[:1], beta[:1], cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_comba(q[:1], k[:1], v[:1], p[:1], g[:1], beta[:1], cu_seqlens=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="HV a multiple of"):
        chunk_comba(q, k, torch.randn(2, 8, 3, 8), p, torch.zeros(2, 8, 3), torch.rand(2, 8, 3))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_gpu(dtype):
    inputs = make_inputs(2, 1000, 4, 128, 128, dtype, HV=8, num_states=2)
    ratio = {**ratios(dtype), "o": tol(dtype, 2), "ht": tol(dtype, 2)}
    if dtype == torch.bfloat16:
        ratio = {n: 3 * r for n, r in ratio.items()}
    check(chunk_comba, inputs, "triton", ratio, use_qk_l2norm_in_kernel=True)
    check(fused, inputs, "triton", ratio, use_qk_l2norm_in_kernel=True)


def test_shared_stages_erase_keys_with_vector_gate():
    # the shared delta stages take Comba's erase keys p and KDA's per-key-channel gate gk side by side: the
    # recurrences run both (the erase reads the state, then diag(exp(gk)) decays it); the chunked stages refuse
    from fla.ops.common.chunk import chunk_layout
    from fla.ops.common.chunk_delta import chunk_delta_rule_bwd, chunk_delta_rule_fwd
    from fla.ops.common.chunk_torch import chunk_delta_torch, wy_representation
    from fla.ops.common.fused_recurrent_delta import fused_recurrent_delta_rule_fwd
    from fla.ops.common.recurrent_torch import recurrent_delta_torch
    from fla.ops.common.wy import chunk_delta_solve, chunk_delta_wy_fwd

    torch.manual_seed(0)
    B, T, H, K, V = 1, 12, 2, 16, 8
    q, k, p = (F.normalize(torch.randn(B, T, H, K, dtype=torch.float64), dim=-1) for _ in range(3))
    v, beta = torch.randn(B, T, H, V, dtype=torch.float64), torch.rand(B, T, H, dtype=torch.float64)
    gk = -0.3 * torch.rand(B, T, H, K, dtype=torch.float64)
    S, outs = q.new_zeros(B, H, K, V), []
    for t in range(T):
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", p[:, t], S))
        S = S * gk[:, t].exp()[..., None] + k[:, t, :, :, None] * u[..., None, :]
        outs.append(0.5 * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    ref_o = torch.stack(outs, 1)
    o, ht = recurrent_delta_torch(q, k, v, beta, None, 0.5, None, True, None, gk=gk, p=p)
    assert_close("o", ref_o, o, 1e-12)
    assert_close("ht", S, ht, 1e-12)
    f32 = [t.float().to(DEVICE) for t in (q, k, v, beta, gk, p)]
    with using("triton"):
        o, ht = fused_recurrent_delta_rule_fwd(*f32[:4], None, 0.5, None, True, None, False, False, gk=f32[4], p=f32[5])
    assert_close("o", ref_o, o.cpu(), tol(torch.float32, 2))
    assert_close("ht", S, ht.cpu(), tol(torch.float32, 2))

    q, k, v, beta, gk, p = f32
    layout, Akk = chunk_layout(q, None), torch.zeros(B, T, H, 64, device=DEVICE)
    refused = [
        lambda: chunk_delta_rule_fwd(q, k, v, beta, None, 0.5, None, False, layout, gk=gk, p=p),
        lambda: chunk_delta_rule_bwd(q, k, v, beta, None, None, 0.5, None, v, None, layout, False, gk=gk, p=p),
        lambda: chunk_delta_torch(q, k, v, beta, None, 0.5, gk=gk, p=p),
        lambda: wy_representation(k, v, beta, None, gk, p=p),
        lambda: chunk_delta_wy_fwd(k, v, beta, layout, gk=gk, Akk=Akk, p=p),
        lambda: chunk_delta_solve(k, beta, layout, Akk=Akk, p=p),
    ]
    for call_ in refused:
        with pytest.raises(ValueError, match="erase keys p .* per-key-channel gate gk"):
            call_()


def test_long_sequence_strong_decay_extreme_beta():
    # T = 4096 on the CPU path: log decays down to about -20 per token and beta within 1e-4 of 0 or 1, against the
    # float64 recurrence (output, final state, every gradient): nothing overflows or drifts over 256 chunks
    inputs = make_inputs(1, 4096, 2, 16, 8, torch.float32, HV=4, strength=5.0, num_states=1)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-4))
    check(chunk_comba, inputs, "torch", tol(torch.float32, 10), use_qk_l2norm_in_kernel=True)  # measured <= 6.3e-6
