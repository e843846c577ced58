"""chunk_retention / fused_recurrent_retention against the float64 recurrent reference."""

import math

import pytest
import torch

from fla.ops.retention import (
    chunk_retention,
    fused_recurrent_retention,
    naive_chunk_retention,
    naive_recurrent_retention,
    retention_log_decays,
)
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, tol


def test_decays_are_retnets():
    expected = [math.log(1 - 2 ** (-5 - h)) for h in range(6)]
    assert torch.allclose(retention_log_decays(6), torch.tensor(expected), rtol=1e-6, atol=0)


def test_decays_are_made_once_and_usable_for_training_after_inference_mode():
    from fla.ops.retention.decays import retention_gates

    q = torch.randn(1, 4, 5, 8)
    with torch.inference_mode():
        first = retention_gates(q[:, :, :5])
        torch.testing.assert_close(first, retention_log_decays(5), rtol=0, atol=0)
    assert retention_gates(q) is first  # cached per (heads, device)
    assert not first.is_inference()  # made outside inference mode: autograd may save it
    q, k, v = (torch.randn(1, 6, 5, 8, requires_grad=True) for _ in range(3))
    chunk_retention(q, k, v)[0].sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_cpu_chunked_form_matches_recurrence_float64():
    inputs = make_inputs(2, 100, 3, 36, 20, torch.float64, num_states=2)
    check_against_reference(naive_chunk_retention, naive_recurrent_retention, inputs, "torch", tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, T", [(torch.float32, 100), (torch.float16, 63)])
def test_chunk(backend, dtype, T):
    inputs = make_inputs(2, T, 2, 60, 32, dtype, num_states=2)
    check_against_reference(chunk_retention, naive_recurrent_retention, inputs, backend, default_ratios(dtype, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen(backend):
    lengths = [1, 70, 29]
    inputs = make_inputs(1, sum(lengths), 2, 32, 32, torch.float32, num_states=len(lengths))
    check_varlen_matches_loop(chunk_retention, inputs, lengths, backend, tol(torch.float32, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    inputs = make_inputs(2, 40, 2, 32, 20, torch.float32, num_states=2)
    check_against_reference(
        fused_recurrent_retention, naive_recurrent_retention, inputs, backend, default_ratios(torch.float32, 2)
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    "B, T, H, D, dtype",
    [(4, 4096, 16, 128, torch.bfloat16), (2, 8192, 8, 64, torch.float16), (1, 2048, 4, 256, torch.float32)],
)
def test_chunk_gpu(B, T, H, D, dtype):
    inputs = make_inputs(B, T, H, D, D, dtype, num_states=B, device=DEVICE)
    check_against_reference(chunk_retention, naive_chunk_retention, inputs, "triton", default_ratios(dtype, 2))
