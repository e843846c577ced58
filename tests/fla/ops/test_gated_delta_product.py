"""chunk_gated_delta_product / fused_recurrent_gated_delta_product against a float64 step-by-step reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton

import fla.ops.common.wy_bwd as wy_bwd
from fla.ops.common.inputs import l2norm
from fla.ops.common.tuning import autotuner_of, only_configs
from fla.ops.gated_delta_product import (
    chunk_gated_delta_product,
    fused_recurrent_gated_delta_product,
    naive_recurrent_gated_delta_product,
)
from fla.utils.launch import lean_launch_disabled
from tests.fla.ops.gated import default_ratios
from tests.harness import DEVICE, assert_close, assert_grads_close, to_reference, tol, using

TOKENS = ("q", "k", "v", "g", "beta")
SLOW = pytest.mark.slow


def reference(
    q, k, v, g, beta, num_householder, scale=None, initial_state=None, output_final_state=True,
    use_qk_l2norm_in_kernel=False, cu_seqlens=None,
):  # fmt: skip
    """Per token: ``S <- exp(g_t) S``, then ``n`` steps ``S <- S + beta k (v - k^T S)^T``, ``o_t = scale q_t^T S``
    (float64; q/k heads repeated to v's; one sequence per ``cu_seqlens`` piece)."""
    n = num_householder
    if cu_seqlens is not None:
        bounds = cu_seqlens.tolist()
        outs, states = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = None if initial_state is None else initial_state[i : i + 1]
            gi = None if g is None else g[:, a:b]
            o, s = reference(
                q[:, a:b], k[:, a * n : b * n], v[:, a * n : b * n], gi, beta[:, a * n : b * n], n, scale, h0,
                True, use_qk_l2norm_in_kernel,
            )  # fmt: skip
            outs.append(o)
            states.append(s)
        return torch.cat(outs, 1), torch.cat(states, 0)
    B, T, H, K = q.shape
    HV, V = v.shape[2:]
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    q, k = (t.repeat_interleave(HV // H, 2) for t in (q, k))
    S = q.new_zeros(B, HV, K, V) if initial_state is None else initial_state
    outs = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t].exp()[..., None, None]
        for j in range(n):
            i = t * n + j
            u = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhk,bhkv->bhv", k[:, i], S))
            S = S + k[:, i, :, :, None] * u[..., None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return (torch.stack(outs, 1) if outs else v.new_zeros(B, 0, HV, V)), S


def make_inputs(B, T, n, H, K, V, dtype, HV=None, gated=True, strength=0.1, num_states=None, beta_max=1.0):
    """Random leaves: q ``[B, T, H, K]``, k ``[B, T*n, H, K]``, v ``[B, T*n, HV, V]``, beta ``[B, T*n, HV]`` in
    ``(0, beta_max)``, g ``[B, T, HV]`` (``gated``), h0 ``[num_states, HV, K, V]``."""
    HV = HV or H
    out = {
        "q": torch.randn(B, T, H, K, device=DEVICE),
        "k": torch.randn(B, T * n, H, K, device=DEVICE),
        "v": torch.randn(B, T * n, HV, V, device=DEVICE),
        "g": F.logsigmoid(torch.randn(B, T, HV, device=DEVICE)) * strength if gated else None,
        "beta": torch.rand(B, T * n, HV, device=DEVICE) * beta_max,
    }
    out = {name: t.to(dtype) for name, t in out.items() if t is not None}
    if num_states is not None:
        out["h0"] = torch.randn(
            num_states, HV, K, V, device=DEVICE, dtype=torch.float64 if dtype == torch.float64 else torch.float32
        )
    return {name: t.requires_grad_() for name, t in out.items()}


def call(op, inputs, n, **kwargs):
    args = [inputs.get(name) for name in TOKENS]
    return op(*args, n, initial_state=inputs.get("h0"), output_final_state=True, **kwargs)


def check(op, inputs, n, backend, ratio, **kwargs):
    """``op`` (with ``backend``) vs :func:`reference` on float64 copies: o, the final state, every gradient."""
    bound = (lambda name: ratio.get(name, ratio["q"])) if isinstance(ratio, dict) else (lambda name: ratio)
    with using(backend):
        o, ht = call(op, inputs, n, **kwargs)
    ref_inputs = {name: to_reference(t) for name, t in inputs.items()}
    ref_o, ref_ht = call(reference, ref_inputs, n, **kwargs)
    assert o.shape == inputs["q"].shape[:2] + inputs["v"].shape[2:] and o.dtype == inputs["v"].dtype
    assert_close("o", ref_o, o, bound("o"))
    assert_close("ht", ref_ht, ht, bound("ht"))
    grad_out = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(inputs, ref_inputs, (o, ht), (ref_o, ref_ht), grad_out, {k: bound(k) for k in inputs})


def ratios(dtype):
    return {**default_ratios(dtype, 2), "beta": tol(dtype, 2)}


@pytest.mark.parametrize("n, gated", [(2, True), (3, False)])
def test_cpu_matches_reference_float64(n, gated):
    # n * T = 66 / 99 / 33 micro-steps: the chunk boundaries fall inside tokens' Householder steps
    inputs = make_inputs(1, 33, n, 2, 20, 12, torch.float64, HV=4, gated=gated, num_states=1)
    check(chunk_gated_delta_product, inputs, n, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)
    check(naive_recurrent_gated_delta_product, inputs, n, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)


def test_cpu_strong_decay_extreme_beta_negative_eigenvalues_float64():
    # log decays ~ -20 per token; beta in (0, 2) (allow_neg_eigval, as the layer passes it) near 0, 1 and 2
    inputs = make_inputs(1, 40, 2, 1, 16, 8, torch.float64, strength=20.0, num_states=1)
    with torch.no_grad():
        pick = torch.randint(0, 3, inputs["beta"].shape, device=DEVICE).double()
        inputs["beta"].copy_(torch.where(pick == 0, 1e-3, torch.where(pick == 1, 1.0 - 1e-3, 2.0 - 1e-3)))
    check(chunk_gated_delta_product, inputs, 2, "torch", tol(torch.float64), use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize(
    "backend, op, dtype",
    [
        ("triton", chunk_gated_delta_product, torch.float32),
        pytest.param("triton", fused_recurrent_gated_delta_product, torch.float16, marks=SLOW),
        pytest.param("torch", fused_recurrent_gated_delta_product, torch.float32),
    ],
)
def test_ops(backend, op, dtype):
    # T = 35 tokens, n = 2: 70 micro-steps, a partial second chunk; K, V not powers of two
    inputs = make_inputs(1, 35, 2, 2, 20, 12, dtype, num_states=1, beta_max=2.0)
    check(op, inputs, 2, backend, ratios(dtype), use_qk_l2norm_in_kernel=True, scale=0.3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=SLOW)])
@pytest.mark.parametrize("op", [chunk_gated_delta_product, fused_recurrent_gated_delta_product])
def test_varlen_grouped_heads(backend, op):
    # packed sequences with a length-1 and an empty one (cu_seqlens over tokens); 2 q/k heads for 4 value heads
    lengths = [1, 20, 0, 13]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 2, 2, 16, 12, torch.float32, HV=4, num_states=len(lengths))
    check(op, inputs, 2, backend, ratios(torch.float32), use_qk_l2norm_in_kernel=True, cu_seqlens=cu)


@SLOW
@pytest.mark.parametrize("n", [2, 3])
def test_triton_odd_sizes(n):
    inputs = make_inputs(2, 63, n, 2, 60, 36, torch.float32, num_states=2, strength=3.0)
    check(chunk_gated_delta_product, inputs, n, "triton", ratios(torch.float32), use_qk_l2norm_in_kernel=True)


def test_triton_decode_without_grad():
    # decoding: one token per sequence, the recurrent kernel alone
    inputs = {k: t.detach() for k, t in make_inputs(3, 1, 3, 2, 24, 20, torch.float32, HV=4, num_states=3).items()}
    with torch.no_grad(), using("triton"):
        o, ht = call(fused_recurrent_gated_delta_product, inputs, 3, use_qk_l2norm_in_kernel=True)
    ref_o, ref_ht = call(reference, {k: t.double() for k, t in inputs.items()}, 3, use_qk_l2norm_in_kernel=True)
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


def test_errors_name_the_argument():
    x = {k: t.detach() for k, t in make_inputs(2, 8, 2, 2, 16, 8, torch.float32).items()}
    q, k, v, g, beta = (x[name] for name in TOKENS)
    with pytest.raises(
        ValueError, match=r"k has shape \[2, 8, 2, 16\], expected \[2, 16, 2, 16\] \[B, T \* num_householder"
    ):
        chunk_gated_delta_product(q, k[:, :8], v, g, beta, 2)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 16, 2, 1\]"):
        fused_recurrent_gated_delta_product(q, k, v, g, beta[..., None], 2)
    with pytest.raises(ValueError, match=r"g has shape \[2, 16, 2\], expected \[2, 8, 2\]"):
        chunk_gated_delta_product(q, k, v, g.repeat(1, 2, 1), beta, 2)
    with pytest.raises(ValueError, match="num_householder must be an int >= 1, got 0"):
        chunk_gated_delta_product(q, k, v, g, beta, 0)
    with pytest.raises(ValueError, match="cu_seqlens"):  # bounds over the 8 tokens, not the 16 micro-steps
        chunk_gated_delta_product(q[:1], k[:1], v[:1], g[:1], beta[:1], 2, cu_seqlens=torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_gated_delta_product(q[:1], k[:1], v[:1], g[:1], beta[:1], 2, cu_seqlens=torch.tensor([0, 6, 3, 8]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_gpu(dtype):
    inputs = make_inputs(2, 1000, 3, 4, 128, 128, dtype, num_states=2, beta_max=2.0)
    ratio = {**ratios(dtype), "o": tol(dtype, 2), "ht": tol(dtype, 2)}
    if dtype == torch.bfloat16:
        ratio = {name: 3 * r for name, r in ratio.items()}
    check(chunk_gated_delta_product, inputs, 3, "triton", ratio, use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "V, T, n, beta_max, strength",
    [
        pytest.param(256, 2048, 2, 2.0, 1.0, id="340M"),
        pytest.param(128, 2048, 2, 2.0, 1.0, id="V128"),
        pytest.param(256, 1000, 2, 2.0, 1.0, id="T1000"),
        pytest.param(256, 2048, 2, 1.0, 1.0, id="beta1"),
        pytest.param(256, 2048, 2, 2.0, 0.1, id="weak_gates"),
        pytest.param(128, 1000, 2, 2.0, 0.1, id="test_chunk_gpu_sizes"),  # only n = 2 and 6 heads differ from it
        pytest.param(256, 4096, 1, 2.0, 1.0, id="gated_delta_rule_T4096"),  # the same steps, no zero q / g rows
    ],
)
def test_chunk_gpu_340m_shapes(V, T, n, beta_max, strength):
    """GatedDeltaProduct-340M's layer shapes in bf16 (6 heads, K = 128, V = 256, two Householder steps, beta in
    (0, 2), L2 norm in the kernel). flame's 340M run stopped at step 1 with a NaN gradient norm on an H100, and this
    op alone gave non-finite dk and dg there (o, dq, dv, dbeta finite) while ``test_chunk_gpu`` (K = V = 128,
    T = 1000, weak gates) passed; the other cases change one of those factors at a time (n = 1: the gated delta
    rule on as many steps, every query and gate nonzero)."""
    inputs = make_inputs(2, T, n, 6, 128, V, torch.bfloat16, strength=strength, beta_max=beta_max)
    dtype = torch.bfloat16
    ratio = {**ratios(dtype), "o": tol(dtype, 2), "ht": tol(dtype, 2)}
    ratio = {name: 3 * r for name, r in ratio.items()}  # as test_chunk_gpu's bf16 bounds
    check(chunk_gated_delta_product, inputs, n, "triton", ratio, use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
@pytest.mark.parametrize("T, n", [pytest.param(2048, 2, id="340M"), pytest.param(4096, 1, id="gated_delta_rule_T4096")])
def test_wy_bwd_every_config_gpu(T, n):
    """The WY backward kernel under each of its autotune configs alone, at the shapes where triton 3.6's 4-warp,
    3-stage build of it gave non-finite dk / dg on Hopper, a different set each run (the GPU test runs otherwise
    compile one config per key in turn, and the autotuner picked that one in training): every gradient finite and
    each config's gradients within bf16 rounding of the first config's."""
    inputs = make_inputs(2, T, n, 6, 128, 256, torch.bfloat16, strength=1.0, beta_max=2.0)
    leaves = list(inputs.values())
    o, ht = call(chunk_gated_delta_product, inputs, n, use_qk_l2norm_in_kernel=True)
    grad_out = (torch.randn_like(o), torch.randn_like(ht))
    kernel = wy_bwd.chunk_delta_wy_bwd_kernel
    first = None
    for config in list(autotuner_of(kernel).configs):
        with lean_launch_disabled(), only_configs(kernel, [config]):
            o, ht = call(chunk_gated_delta_product, inputs, n, use_qk_l2norm_in_kernel=True)
            grads = dict(zip(inputs, torch.autograd.grad((o, ht), leaves, grad_out)))
        for name, g in grads.items():
            assert torch.isfinite(g).all(), f"{config}: d{name} has {int((~torch.isfinite(g)).sum())} non-finite"
        first = first or grads
        for name, g in grads.items():
            assert_close(f"d{name} ({config})", first[name].double(), g.double(), tol(torch.bfloat16))


def test_only_configs_swaps_and_restores_the_autotune_list():
    kernel = wy_bwd.chunk_delta_wy_bwd_kernel
    tuner = autotuner_of(kernel)
    saved = list(tuner.configs)
    config = triton.Config({}, num_warps=2, num_stages=1)
    with only_configs(kernel, [config]) as inside:
        assert inside is tuner and tuner.configs == [config]
        inputs = make_inputs(1, 20, 2, 2, 16, 16, torch.float32)
        check(chunk_gated_delta_product, inputs, 2, "triton", tol(torch.float32, 4))
    assert tuner.configs == saved and tuner.cache == {}
    with pytest.raises(TypeError, match="not an autotuned Triton kernel"):
        autotuner_of(chunk_gated_delta_product)  # a Python op, not a kernel
