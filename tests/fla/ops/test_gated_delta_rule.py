"""chunk_gated_delta_rule / fused_recurrent_gated_delta_rule against the float64 recurrent reference."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from tests.fla.ops.gated import default_ratios
from tests.fla.ops.test_delta_rule import (
    GPU_SHAPES,
    OPTIONS,
    check_delta,
    check_delta_varlen,
    gpu_ratios,
    make_delta_inputs,
)
from tests.harness import BACKENDS, DEVICE, assert_close, near_zero_or_one, tol, using


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("T", [100, 1])
def test_cpu_chunked_form_matches_recurrence_float64(option, T):
    # mild decays (strength 0.05) so the state carries across chunks; strong ones are tested below
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_delta_inputs(
        2, T, 2, 36, 20, torch.float64, gated=True, strength=0.05, num_states=2, unit_keys=unit_keys
    )
    check_delta(
        naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule, inputs, "torch", tol(torch.float64), **kwargs
    )


def test_cpu_chunked_form_strong_decay_float64():
    # log gates ~ -20 per token: exp of chunk cumsums underflows, differences must still be exact
    inputs = make_delta_inputs(1, 130, 2, 24, 20, torch.float64, gated=True, strength=20.0, num_states=1)
    check_delta(naive_chunk_gated_delta_rule, naive_recurrent_gated_delta_rule, inputs, "torch", tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule])
@pytest.mark.parametrize("dtype, T, option", [(torch.float32, 63, "l2norm"), (torch.float16, 100, "both")])
def test_ops(backend, op, dtype, T, option):
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_delta_inputs(1, T, 2, 60, 36, dtype, gated=True, strength=0.05, num_states=1, unit_keys=unit_keys)
    check_delta(op, naive_recurrent_gated_delta_rule, inputs, backend, default_ratios(dtype, 2), scale=0.3, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule])
def test_varlen(backend, op):
    lengths = [1, 70, 0, 29]
    inputs = make_delta_inputs(
        1, sum(lengths), 2, 40, 24, torch.float32, gated=True, strength=0.05, num_states=len(lengths), unit_keys=False
    )
    check_delta_varlen(op, inputs, lengths, backend, tol(torch.float32, 2), use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule])
@pytest.mark.parametrize("B, T, K, V", [(3, 1, 100, 70), (1, 70, 100, 70), (2, 5, 16, 130), (1, 66, 200, 20)])
def test_odd_shapes(backend, op, B, T, K, V):
    # one token (decode) and odd head dims: several K / V blocks of the kernels, masked K
    inputs = make_delta_inputs(B, T, 2, K, V, torch.float32, gated=True, strength=0.05, num_states=B, unit_keys=False)
    check_delta(
        op, naive_recurrent_gated_delta_rule, inputs, backend, default_ratios(torch.float32, 2),
        use_qk_l2norm_in_kernel=True, allow_neg_eigval=True,
    )  # fmt: skip


@pytest.mark.parametrize("op", [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule])
def test_triton_strong_decay_partial_chunk(op):
    # log decays ~ -4 per token: exp(G) of a chunk underflows; T = 100 leaves a partial last chunk,
    # whose padded rows must not turn exp(G_i - G_j) into inf (0 * inf = NaN); beta near 0 and 1
    inputs = make_delta_inputs(1, 100, 2, 40, 24, torch.float32, gated=True, strength=5.0, num_states=1)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one(inputs["beta"].shape, 1e-3))
    # dg sums differences of O(1) terms whose exact sum is small under strong decay: a looser bound
    ratios = default_ratios(torch.float32, 2, dg_scale=10)
    check_delta(op, naive_recurrent_gated_delta_rule, inputs, "triton", ratios, allow_neg_eigval=True)


def _grouped_inputs(B, T, H, groups, K, V, dtype, device=DEVICE):
    """Inputs with ``H`` q/k heads and ``H * groups`` value heads (v, g, beta, h0)."""
    inputs = make_delta_inputs(
        B, T, H * groups, K, V, dtype, gated=True, strength=0.05, num_states=B, unit_keys=False, device=device
    )
    qk = make_delta_inputs(B, T, H, K, V, dtype, unit_keys=False, device=device)
    return {**inputs, "q": qk["q"], "k": qk["k"]}


def _expanded_reference(groups):
    """The recurrent reference run on q and k repeated to the value heads (autograd sums the groups)."""

    def reference(q, k, v, g, beta, **kwargs):
        q, k = q.repeat_interleave(groups, 2), k.repeat_interleave(groups, 2)
        return naive_recurrent_gated_delta_rule(q, k, v, g, beta, **kwargs)

    return reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_gated_delta_rule, fused_recurrent_gated_delta_rule])
def test_grouped_value_heads(backend, op):
    # q, k with 2 heads; v, g, beta, h0 with 6: value head j reads q/k head j // 3
    inputs = _grouped_inputs(1, 70, 2, 3, 32, 20, torch.float32)
    check_delta(
        op, _expanded_reference(3), inputs, backend, default_ratios(torch.float32, 2), use_qk_l2norm_in_kernel=True
    )


@pytest.mark.parametrize("option", ["l2norm", "both"])
def test_fused_recurrent_decode_without_grad(option):
    # no gradient wanted: the single-kernel path with the L2 norm and beta scaling fused in
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_delta_inputs(3, 2, 2, 60, 36, torch.float32, gated=True, num_states=3, unit_keys=unit_keys)
    args = [inputs[n].detach() for n in ("q", "k", "v", "g", "beta")]
    h0 = inputs["h0"].detach()
    with torch.no_grad(), using("triton"):
        o, ht = fused_recurrent_gated_delta_rule(*args, initial_state=h0, output_final_state=True, **kwargs)
    ref_o, ref_ht = naive_recurrent_gated_delta_rule(
        *(a.double() for a in args), initial_state=h0.double(), output_final_state=True, **kwargs
    )
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


def test_grouped_heads_must_divide():
    q, k, v = torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 16), torch.randn(1, 8, 5, 8)
    g, beta = torch.randn(1, 8, 5).sigmoid().log(), torch.rand(1, 8, 5)
    with pytest.raises(ValueError, match=r"v has shape \[1, 8, 5, 8\], expected \[B, T, HV, V\] with HV a multiple"):
        chunk_gated_delta_rule(q, k, v, g, beta)
    with pytest.raises(ValueError, match=r"beta has shape \[1, 8, 2\], expected \[1, 8, 4\]"):
        chunk_gated_delta_rule(q, k, v[:, :, :4], g[..., :4], beta[..., :2])


def _long_strong_decay_check(B, T, H, D, dtype, device, log_decay):
    """T tokens with log decays ``log_decay(shape)`` and beta within 1e-4 of 0 or 1: finite outputs,
    final state and gradients, and a tail that matches the float64 recurrence."""
    inputs = make_delta_inputs(B, T, H, D, D, dtype, gated=True, num_states=B, unit_keys=False, device=device)
    with torch.no_grad():
        inputs["beta"].copy_(near_zero_or_one((B, T, H), 1e-4, device) + torch.rand(B, T, H, device=device) * 1e-5)
        inputs["g"].copy_(log_decay((B, T, H)))
    o, ht = chunk_gated_delta_rule(
        *(inputs[n] for n in ("q", "k", "v", "g", "beta")), initial_state=inputs["h0"], output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    assert torch.isfinite(o).all() and torch.isfinite(ht).all(), "non-finite output or final state"
    (o.float().square().mean() + ht.square().mean()).backward()
    for name, t in inputs.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), f"d{name} is missing or not finite"
    # the tail agrees with the float64 recurrence started from the exact state 200 tokens earlier
    cut = T - 200
    args = [inputs[n].detach().double() for n in ("q", "k", "v", "g", "beta")]
    _, h_cut = naive_chunk_gated_delta_rule(  # the PyTorch chunked form on any device
        *(a[:, :cut] for a in args), initial_state=inputs["h0"].detach().double(), output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    ref_o, ref_ht = naive_recurrent_gated_delta_rule(
        *(a[:, cut:] for a in args), initial_state=h_cut, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert_close("o tail", ref_o, o[:, cut:].detach(), tol(dtype, 10))
    assert_close("ht", ref_ht, ht.detach(), tol(dtype, 10))


def test_triton_long_sequence_gradients_stay_accurate():
    # T = 2048 (32 chunks) in fp16 through the Triton kernels (the interpreter on CPU): every gradient within 1.5e-3
    # of the float64 reference. The gate gradient is what long sequences test: formed from whole-sequence cumsums,
    # its rows' rounding adds up over the sequence (measured 2.5e-3 here, 7.2e-3 at T=8192); the chunk-local form
    # in use measures 4.5e-4 (6.4e-4 at T=8192)
    inputs = make_delta_inputs(
        1, 2048, 1, 64, 64, torch.float16, gated=True, strength=1 / 16, num_states=1, unit_keys=False, device=DEVICE
    )
    check_delta(
        chunk_gated_delta_rule, naive_chunk_gated_delta_rule, inputs, "triton", 1.5e-3, use_qk_l2norm_in_kernel=True
    )


def test_long_sequence_strong_decay_extreme_beta_no_nan():
    # T = 16384 (256 chunks), log decays down to about -30 per token (the CPU / torch path)
    strong = lambda shape: F.logsigmoid(torch.randn(shape)) * 10.0
    _long_strong_decay_check(1, 16384, 2, 32, torch.float32, DEVICE, strong)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, T", [(torch.bfloat16, 16384), (torch.float32, 16384), (torch.bfloat16, 16383)])
def test_long_sequence_strong_decay_extreme_beta_no_nan_gpu(dtype, T):
    # the Triton path: g ~ -5 per token (exp(sum over a chunk) underflows to 0 in fp32); T = 16383
    # also has a partial last chunk
    decay = lambda shape: -5.0 + 0.5 * torch.randn(shape, device=DEVICE)
    _long_strong_decay_check(2, T, 4, 128, dtype, DEVICE, decay)


def test_errors_name_the_argument():
    q, k, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    g, beta = torch.randn(2, 8, 2).sigmoid().log(), torch.rand(2, 8, 2)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8\], expected \[2, 8, 2\]"):
        chunk_gated_delta_rule(q, k, v, g[..., 0], beta)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 8, 2, 1\], expected \[2, 8, 2\]"):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta[..., None])
    with pytest.raises(TypeError, match="g has dtype torch.int64"):
        chunk_gated_delta_rule(q, k, v, g.long(), beta)
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 2, 8, 16\], expected \[2, 2, 16, 8\]"):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=torch.randn(2, 2, 8, 16))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_recurrent_gpu(dtype):
    # decode-sized batch, and a short varlen sequence batch through the same kernel
    inputs = make_delta_inputs(
        32, 1, 16, 128, 128, dtype, gated=True, strength=0.05, num_states=32, unit_keys=False, device=DEVICE
    )
    check_delta(
        fused_recurrent_gated_delta_rule, naive_recurrent_gated_delta_rule, inputs, "triton",
        default_ratios(dtype, 2), use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    lengths = [1, 200, 33]
    inputs = make_delta_inputs(
        1, 234, 4, 128, 100, dtype, gated=True, strength=0.05, num_states=3, unit_keys=False, device=DEVICE
    )
    check_delta_varlen(  # keys not unit: normalized in the op, else the recurrence diverges
        fused_recurrent_gated_delta_rule, inputs, lengths, "triton", tol(dtype, 2), use_qk_l2norm_in_kernel=True
    )


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", GPU_SHAPES)
def test_chunk_gpu(B, T, H, D, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_delta_inputs(
        B, T, H, D, D, dtype, gated=True, strength=1 / 16, num_states=B, unit_keys=False, device=DEVICE
    )
    check_delta(
        chunk_gated_delta_rule, naive_chunk_gated_delta_rule, inputs, "triton", gpu_ratios(dtype),
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_grouped_value_heads_gpu(dtype):
    # 4 q/k heads, 16 value heads; reference: the float64 chunked form on q, k repeated to 16 heads
    inputs = _grouped_inputs(2, 2048, 4, 4, 128, 128, dtype)

    def reference(q, k, v, g, beta, **kwargs):
        return naive_chunk_gated_delta_rule(q.repeat_interleave(4, 2), k.repeat_interleave(4, 2), v, g, beta, **kwargs)

    check_delta(chunk_gated_delta_rule, reference, inputs, "triton", gpu_ratios(dtype), use_qk_l2norm_in_kernel=True)
