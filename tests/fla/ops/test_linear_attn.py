"""chunk_linear_attn (and fla's fused_chunk name for it) / fused_recurrent_linear_attn against the float64
recurrent reference."""

import pytest
import torch

from fla.ops.linear_attn import (
    chunk_linear_attn,
    fused_chunk_linear_attn,
    fused_recurrent_linear_attn,
    naive_chunk_linear_attn,
    naive_recurrent_linear_attn,
)
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, tol


def _inputs(B, T, H, K, V, dtype, normalize, N=None, device=DEVICE):
    inputs = make_inputs(B, T, H, K, V, dtype, num_states=N or B, feature_map=normalize, device=device)
    if normalize:  # the running key sum carried in from before (positive, like the keys)
        z_dtype = inputs["h0"].dtype
        inputs["z0"] = torch.rand(N or B, 1, H, K, device=device, dtype=z_dtype).requires_grad_()
    return inputs


@pytest.mark.parametrize("normalize", [False, True])
def test_cpu_chunked_form_matches_recurrence_float64(normalize):
    inputs = _inputs(2, 100, 2, 36, 20, torch.float64, normalize)
    check_against_reference(
        naive_chunk_linear_attn, naive_recurrent_linear_attn, inputs, "torch", tol(torch.float64), normalize=normalize
    )


@pytest.mark.parametrize("op", [chunk_linear_attn, fused_chunk_linear_attn], ids=["chunk", "fused_chunk"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, T, normalize", [(torch.float32, 100, False), (torch.float32, 63, True)])
def test_chunk(op, backend, dtype, T, normalize):
    inputs = _inputs(2, T, 2, 60, 32, dtype, normalize)
    check_against_reference(
        op, naive_recurrent_linear_attn, inputs, backend, default_ratios(dtype, 2), normalize=normalize
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_normalized(backend):
    lengths = [1, 70, 29]
    inputs = _inputs(1, sum(lengths), 2, 32, 32, torch.float32, True, N=len(lengths))
    check_varlen_matches_loop(chunk_linear_attn, inputs, lengths, backend, tol(torch.float32, 2), normalize=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", [False, True])
def test_fused_recurrent(backend, normalize):
    inputs = _inputs(2, 40, 2, 32, 20, torch.float16, normalize)
    check_against_reference(
        fused_recurrent_linear_attn, naive_recurrent_linear_attn, inputs, backend, default_ratios(torch.float16, 2),
        normalize=normalize,
    )  # fmt: skip


def test_defaults_follow_fla():
    q, k, v = torch.rand(1, 5, 1, 8), torch.rand(1, 5, 1, 8), torch.randn(1, 5, 1, 4)
    o_chunk, _ = chunk_linear_attn(q, k, v)
    o_norm, _ = naive_recurrent_linear_attn(q, k, v, normalize=True)
    o_recurrent, _ = fused_recurrent_linear_attn(q, k, v)
    o_plain, _ = naive_recurrent_linear_attn(q, k, v)
    assert torch.allclose(o_chunk, o_norm, atol=1e-5) and not torch.allclose(o_chunk, o_plain, atol=1e-3)
    assert torch.allclose(o_recurrent, o_plain, atol=1e-5)


def test_state_pair_needs_normalize():
    q, k, v = torch.rand(1, 5, 1, 8), torch.rand(1, 5, 1, 8), torch.randn(1, 5, 1, 4)
    pair = (torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 1, 8))
    with pytest.raises(ValueError, match="only normalize=True uses"):
        chunk_linear_attn(q, k, v, initial_state=pair, normalize=False)


@pytest.mark.gpu
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(
    "B, T, H, D, dtype",
    [(4, 4096, 16, 128, torch.bfloat16), (2, 8192, 8, 64, torch.float16), (1, 2048, 4, 256, torch.float32)],
)
def test_chunk_gpu(B, T, H, D, dtype, normalize):
    inputs = _inputs(B, T, H, D, D, dtype, normalize, device=DEVICE)
    check_against_reference(
        chunk_linear_attn, naive_chunk_linear_attn, inputs, "triton", default_ratios(dtype, 2), normalize=normalize
    )
