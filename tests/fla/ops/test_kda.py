"""chunk_kda / fused_recurrent_kda against the float64 recurrent reference (per-key-channel decays on the
shared delta stages)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fla.ops.common.inputs import l2norm
from fla.ops.kda import chunk_kda, fused_recurrent_kda, kda_gate, naive_chunk_kda, naive_recurrent_kda
from tests.fla.ops.gated import default_ratios
from tests.fla.ops.test_delta_rule import GPU_SHAPES, OPTIONS, check_delta, check_delta_varlen, gpu_ratios
from tests.harness import BACKENDS, DEVICE, assert_close, near_zero_or_one, tol, using

OPS = [chunk_kda, fused_recurrent_kda]


def make_kda_inputs(
    B, T, H, K, V, dtype, strength=0.05, num_states=None, unit_keys=True, groups=1, device=DEVICE
) -> dict[str, torch.Tensor]:
    """Random leaf tensors (requiring grad): q, k ``[B, T, H, K]``, v ``[B, T, H*groups, V]``, g (log decays
    ``[B, T, H*groups, K]``, ``strength`` scales them), beta in (0, 1) and h0 (``num_states``)."""
    HV = H * groups
    k = torch.randn(B, T, H, K, device=device)
    out = {
        "q": torch.randn(B, T, H, K, device=device),
        "k": l2norm(k) if unit_keys else k,
        "v": torch.randn(B, T, HV, V, device=device),
        "g": F.logsigmoid(torch.randn(B, T, HV, K, device=device)) * strength,
        "beta": torch.rand(B, T, HV, device=device).sigmoid(),
    }
    out = {name: t.to(dtype) for name, t in out.items()}
    if num_states is not None:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        out["h0"] = torch.randn(num_states, HV, K, V, device=device, dtype=state_dtype)
    return {name: t.requires_grad_() for name, t in out.items()}


@pytest.mark.parametrize("T, option", [(40, "both"), (1, "unit_keys")])
def test_cpu_chunked_form_matches_recurrence_float64(T, option):
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_kda_inputs(2, T, 2, 36, 20, torch.float64, strength=0.1, num_states=2, unit_keys=unit_keys)
    check_delta(naive_chunk_kda, naive_recurrent_kda, inputs, "torch", tol(torch.float64), **kwargs)


def test_cpu_chunked_form_strong_decay_float64():
    # per-channel log decays down to ~ -20 per token: exp of chunk cumsums underflows, differences stay exact;
    # beta within 1e-4 of 0 or 1 (replace almost nothing / almost everything). The decayed state reaches
    # float64 subnormals (very slow on CPUs): they are flushed to zero here
    inputs = make_kda_inputs(1, 50, 1, 24, 20, torch.float64, strength=20.0, num_states=1)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-4, "cpu", torch.float64))
    torch.set_flush_denormal(True)
    try:
        check_delta(naive_chunk_kda, naive_recurrent_kda, inputs, "torch", tol(torch.float64))
    finally:
        torch.set_flush_denormal(False)


def test_recurrence_matches_a_plain_loop():
    # the reference itself: S <- diag(exp(g_t)) S, then the delta update with beta_t, k_t
    inputs = {n: t.detach().double() for n, t in make_kda_inputs(1, 9, 1, 5, 3, torch.float64, num_states=1).items()}
    q, k, v, g, beta, h0 = (
        inputs[n][0, :, 0] if n != "h0" else inputs[n][0, 0] for n in ("q", "k", "v", "g", "beta", "h0")
    )
    S, outs = h0.clone(), []
    for t in range(9):
        S = g[t].exp()[:, None] * S
        S = S + beta[t] * torch.outer(k[t], v[t] - k[t] @ S)
        outs.append(0.5 * q[t] @ S)
    o, ht = naive_recurrent_kda(
        *(inputs[n] for n in ("q", "k", "v", "g", "beta")), scale=0.5, initial_state=inputs["h0"],
        output_final_state=True,
    )  # fmt: skip
    assert_close("o", torch.stack(outs), o[0, :, 0], 1e-12)
    assert_close("ht", S, ht[0, 0], 1e-12)


@pytest.mark.parametrize("op", [chunk_kda, pytest.param(fused_recurrent_kda, marks=pytest.mark.slow)])
def test_triton_small(op):
    # every kernel of the chunk pipeline (forward and backward) and the recurrent one, under the interpreter:
    # two chunks (the second partial), odd head dims, an initial state, every gradient
    inputs = make_kda_inputs(1, 70, 1, 20, 12, torch.float32, strength=0.2, num_states=1, unit_keys=False)
    check_delta(
        op, naive_recurrent_kda, inputs, "triton", default_ratios(torch.float32, 2), use_qk_l2norm_in_kernel=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype, T, option", [(torch.float32, 63, "l2norm"), (torch.float16, 100, "unit_keys")])
def test_ops(backend, op, dtype, T, option):
    # (allow_neg_eigval needs the beta sigmoid in the op: test_gate_beta_sigmoid_and_state_layout)
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_kda_inputs(1, T, 2, 60, 36, dtype, strength=0.1, num_states=1, unit_keys=unit_keys)
    check_delta(op, naive_recurrent_kda, inputs, backend, default_ratios(dtype, 2), scale=0.3, **kwargs)


@pytest.mark.parametrize("op", OPS)
def test_varlen_small_cpu(op):
    # packed sequences with a length-1 and an empty one == each sequence alone (the PyTorch paths)
    lengths = [1, 20, 0, 9]
    inputs = make_kda_inputs(1, sum(lengths), 1, 16, 8, torch.float32, num_states=len(lengths), unit_keys=False)
    check_delta_varlen(op, inputs, lengths, "torch", tol(torch.float32, 2), use_qk_l2norm_in_kernel=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_varlen(backend, op):
    lengths = [1, 70, 0, 29]
    inputs = make_kda_inputs(1, sum(lengths), 2, 40, 24, torch.float32, num_states=len(lengths), unit_keys=False)
    check_delta_varlen(op, inputs, lengths, backend, tol(torch.float32, 2), use_qk_l2norm_in_kernel=True)


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("B, T, K, V", [(3, 1, 100, 70), (1, 66, 200, 20)])
def test_triton_odd_shapes(op, B, T, K, V):
    # one token (decode) and odd head dims: several K / V blocks of the kernels, masked K
    inputs = make_kda_inputs(B, T, 2, K, V, torch.float32, num_states=B, unit_keys=False)
    check_delta(
        op, naive_recurrent_kda, inputs, "triton", default_ratios(torch.float32, 2), use_qk_l2norm_in_kernel=True
    )


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_triton_strong_decay_extreme_beta(op):
    # per-channel log decays ~ -5 per token: exp(G) of a chunk underflows; T = 100 leaves a partial last
    # chunk (padded rows must not turn exp(G_i - G_j) into inf); beta near 0 and 1
    inputs = make_kda_inputs(1, 100, 2, 40, 24, torch.float32, strength=5.0, num_states=1)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-3))
    ratios = default_ratios(torch.float32, 2, dg_scale=10)
    check_delta(op, naive_recurrent_kda, inputs, "triton", ratios)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_grouped_value_heads(backend):
    # q, k with 2 heads; v, g, beta, h0 with 6: value head j reads q/k head j // 3
    inputs = make_kda_inputs(1, 70, 2, 32, 20, torch.float32, num_states=1, unit_keys=False, groups=3)

    def reference(q, k, v, g, beta, **kwargs):
        return naive_recurrent_kda(q.repeat_interleave(3, 2), k.repeat_interleave(3, 2), v, g, beta, **kwargs)

    check_delta(chunk_kda, reference, inputs, backend, default_ratios(torch.float32, 2), use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("lower_bound", [None, -5.0])
def test_gate_beta_sigmoid_and_state_layout(backend, lower_bound):
    # the gate in the op (A_log, dt_bias), beta logits, the V-first state layout: the same as applying them
    # by hand and calling the reference on the [K, V] layout
    B, T, H, K, V = 1, 37, 2, 16, 12
    g_raw, beta_raw = torch.randn(B, T, H, K), torch.randn(B, T, H)
    A_log, dt_bias = torch.rand(H).add(0.5).log(), torch.randn(H * K)
    q, k, v, h0 = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V), torch.randn(B, H, K, V)
    with using(backend):
        o, ht = chunk_kda(
            q, k, v, g_raw, beta_raw, initial_state=h0.transpose(-1, -2).contiguous(), output_final_state=True,
            use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True,
            allow_neg_eigval=True, A_log=A_log, dt_bias=dt_bias, lower_bound=lower_bound, state_v_first=True,
        )  # fmt: skip
    x = g_raw + dt_bias.view(H, K)
    if lower_bound is None:
        g = -A_log.exp()[:, None] * F.softplus(x)
    else:
        g = lower_bound * torch.sigmoid(A_log.exp()[:, None] * x)
    assert_close("kda_gate", g, kda_gate(g_raw, A_log, dt_bias, lower_bound), 1e-6)
    ref_o, ref_ht = naive_recurrent_kda(
        *(t.double() for t in (q, k, v, g, 2 * beta_raw.sigmoid())), initial_state=h0.double(),
        output_final_state=True, use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht.transpose(-1, -2), ht, tol(torch.float32, 2))


@pytest.mark.parametrize("option", ["l2norm"])
def test_fused_recurrent_decode_without_grad(option):
    # no gradient wanted: the single-kernel path with the L2 norm and beta scaling fused in
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_kda_inputs(3, 2, 2, 60, 36, torch.float32, num_states=3, unit_keys=unit_keys)
    args = [inputs[n].detach() for n in ("q", "k", "v", "g", "beta")]
    h0 = inputs["h0"].detach()
    with torch.no_grad(), using("triton"):
        o, ht = fused_recurrent_kda(*args, initial_state=h0, output_final_state=True, **kwargs)
    ref_o, ref_ht = naive_recurrent_kda(
        *(a.double() for a in args), initial_state=h0.double(), output_final_state=True, **kwargs
    )
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


def test_errors_name_the_argument():
    q, k, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    g, beta = F.logsigmoid(torch.randn(2, 8, 2, 16)), torch.rand(2, 8, 2)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8, 2\], expected \[2, 8, 2, 16\]"):
        chunk_kda(q, k, v, g[..., 0], beta)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 8, 2, 1\], expected \[2, 8, 2\]"):
        fused_recurrent_kda(q, k, v, g, beta[..., None])
    with pytest.raises(TypeError, match="g has dtype torch.int64"):
        chunk_kda(q, k, v, g.long(), beta)
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 2, 8, 16\], expected \[2, 2, 16, 8\]"):
        fused_recurrent_kda(q, k, v, g, beta, initial_state=torch.randn(2, 2, 8, 16))
    with pytest.raises(ValueError, match="A_log must be given"):
        chunk_kda(q, k, v, g, beta, use_gate_in_kernel=True)
    with pytest.raises(ValueError, match=r"dt_bias has shape \[16\], expected \[HV \* K\] = \[32\]"):
        chunk_kda(q, k, v, g, beta, use_gate_in_kernel=True, A_log=torch.zeros(2), dt_bias=torch.zeros(16))
    with pytest.raises(ValueError, match=r"A_log has shape \[3\], expected \[2\]"):
        fused_recurrent_kda(q, k, v, g, beta, A_log=torch.zeros(3), use_gate_in_kernel=True)
    with pytest.raises(ValueError, match="allow_neg_eigval=True requires use_beta_sigmoid_in_kernel"):
        chunk_kda(q, k, v, g, beta, allow_neg_eigval=True)
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_kda(q[:1], k[:1], v[:1], g[:1], beta[:1], cu_seqlens=torch.tensor([0, 5, 4], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"v has shape \[2, 8, 3, 8\], expected \[B, T, HV, V\] with HV a multiple"):
        chunk_kda(q, k, torch.randn(2, 8, 3, 8), torch.randn(2, 8, 3, 16), torch.rand(2, 8, 3))


def _long_strong_decay_check(B, T, H, D, dtype, device, strength):
    """T tokens with per-channel log decays ``strength * logsigmoid(randn)`` and beta within 1e-4 of 0 or 1:
    finite outputs, final state and gradients, and a tail that matches the float64 recurrence."""
    inputs = make_kda_inputs(B, T, H, D, D, dtype, strength=strength, num_states=B, unit_keys=False, device=device)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one((B, T, H), 1e-4, device) + torch.rand(B, T, H, device=device) * 1e-5)
    names = ("q", "k", "v", "g", "beta")
    o, ht = chunk_kda(
        *(inputs[n] for n in names), initial_state=inputs["h0"], output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert torch.isfinite(o).all() and torch.isfinite(ht).all(), "non-finite output or final state"
    (o.float().square().mean() + ht.square().mean()).backward()
    for name, t in inputs.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), f"d{name} is missing or not finite"
    cut = T - 100
    args = [inputs[n].detach().double() for n in names]
    _, h_cut = naive_chunk_kda(
        *(a[:, :cut] for a in args), initial_state=inputs["h0"].detach().double(), output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    ref_o, ref_ht = naive_recurrent_kda(
        *(a[:, cut:] for a in args), initial_state=h_cut, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert_close("o tail", ref_o, o[:, cut:].detach(), tol(dtype, 10))
    assert_close("ht", ref_ht, ht.detach(), tol(dtype, 10))


@pytest.mark.slow
def test_long_sequence_strong_decay_extreme_beta_no_nan():
    # T = 4096 (the CPU / torch path), per-channel log decays down to about -30 per token
    _long_strong_decay_check(1, 4096, 2, 32, torch.float32, DEVICE, 10.0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, T", [(torch.bfloat16, 16384), (torch.float32, 16383)])
def test_long_sequence_strong_decay_extreme_beta_no_nan_gpu(dtype, T):
    _long_strong_decay_check(2, T, 4, 128, dtype, DEVICE, 5.0)


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", GPU_SHAPES)
def test_chunk_gpu(B, T, H, D, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_kda_inputs(B, T, H, D, D, dtype, strength=1 / 16, num_states=B, unit_keys=False)
    check_delta(chunk_kda, naive_chunk_kda, inputs, "triton", gpu_ratios(dtype), use_qk_l2norm_in_kernel=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_recurrent_gpu(dtype):
    inputs = make_kda_inputs(32, 1, 16, 128, 128, dtype, num_states=32, unit_keys=False)
    check_delta(
        fused_recurrent_kda, naive_recurrent_kda, inputs, "triton", default_ratios(dtype, 2),
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    lengths = [1, 200, 33]
    inputs = make_kda_inputs(1, 234, 4, 128, 100, dtype, num_states=3, unit_keys=False)
    check_delta_varlen(fused_recurrent_kda, inputs, lengths, "triton", tol(dtype, 2), use_qk_l2norm_in_kernel=True)
