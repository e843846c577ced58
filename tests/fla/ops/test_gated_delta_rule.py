"""chunk_gated_delta_rule / fused_recurrent_gated_delta_rule against the float64 recurrent reference."""

import pytest
import torch

from fla.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from tests.fla.ops.gated import default_ratios
from tests.fla.ops.test_delta_rule import OPTIONS, check_delta, check_delta_varlen, gpu_ratios, make_delta_inputs
from tests.harness import BACKENDS, DEVICE, assert_close, tol


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
@pytest.mark.parametrize("B, T, K, V", [(3, 1, 100, 70), (1, 70, 100, 70), (2, 5, 16, 130)])
def test_odd_shapes(backend, op, B, T, K, V):
    # one token (decode) and odd head dims: several K / V blocks of the kernels, masked K
    inputs = make_delta_inputs(B, T, 2, K, V, torch.float32, gated=True, strength=0.05, num_states=B, unit_keys=False)
    check_delta(
        op, naive_recurrent_gated_delta_rule, inputs, backend, default_ratios(torch.float32, 2),
        use_qk_l2norm_in_kernel=True, allow_neg_eigval=True,
    )  # fmt: skip


def test_long_sequence_strong_decay_extreme_beta_no_nan():
    # T = 16384 (256 chunks) with log decays down to about -30 per token and beta within 1e-4 of 0 or 1
    B, T, H, D = 1, 16384, 2, 32
    inputs = make_delta_inputs(B, T, H, D, D, torch.float32, gated=True, strength=10.0, num_states=B, unit_keys=False)
    with torch.no_grad():
        near = torch.randint(0, 2, (B, T, H)).float()
        inputs["beta"].copy_(near * (1 - 1e-4) + (1 - near) * 1e-4 + torch.rand(B, T, H) * 1e-5)
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
    _, h_cut = chunk_gated_delta_rule(
        *(a[:, :cut] for a in args), initial_state=inputs["h0"].detach().double(), output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
    ref_o, ref_ht = naive_recurrent_gated_delta_rule(
        *(a[:, cut:] for a in args), initial_state=h_cut, output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert_close("o tail", ref_o, o[:, cut:].detach(), tol(torch.float32, 10))
    assert_close("ht", ref_ht, ht.detach(), tol(torch.float32, 10))


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
    check_delta_varlen(fused_recurrent_gated_delta_rule, inputs, lengths, "triton", tol(dtype, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", [(4, 2048, 8, 128, torch.bfloat16), (2, 1000, 4, 100, torch.float32)])
def test_chunk_gpu(B, T, H, D, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_delta_inputs(
        B, T, H, D, D, dtype, gated=True, strength=1 / 16, num_states=B, unit_keys=False, device=DEVICE
    )
    check_delta(
        chunk_gated_delta_rule, naive_chunk_gated_delta_rule, inputs, "triton", gpu_ratios(dtype),
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip
