"""chunk_simple_gla / fused_recurrent_simple_gla against the float64 recurrent reference."""

import pytest
import torch

from fla.ops.simple_gla import (
    chunk_simple_gla,
    fused_recurrent_simple_gla,
    naive_chunk_simple_gla,
    naive_recurrent_simple_gla,
)
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, tol

GAMMA = {"none": None, "gamma": torch.tensor([-0.05, -0.7]), "both": torch.tensor([-0.01, -0.3])}


@pytest.mark.parametrize("gates", ["g", "gamma", "both"])
def test_cpu_chunked_form_matches_recurrence_float64(gates):
    inputs = make_inputs(2, 100, 2, 36, 20, torch.float64, gate="none" if gates == "gamma" else "scalar", num_states=2)
    kwargs = {} if gates == "g" else {"g_gamma": GAMMA[gates].double()}
    check_against_reference(
        naive_chunk_simple_gla, naive_recurrent_simple_gla, inputs, "torch", tol(torch.float64), **kwargs
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype, T, gates",
    [(torch.float32, 100, "g"), (torch.float32, 63, "gamma"), (torch.float16, 100, "both"), (torch.float32, 1, "g")],
)
def test_chunk(backend, dtype, T, gates):
    inputs = make_inputs(2, T, 2, 60, 36, dtype, gate="none" if gates == "gamma" else "scalar", num_states=2)
    kwargs = {} if gates == "g" else {"g_gamma": GAMMA[gates]}
    check_against_reference(
        chunk_simple_gla, naive_recurrent_simple_gla, inputs, backend, default_ratios(dtype, 2), scale=0.3, **kwargs
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_strong_decay_without_state(backend):
    # log gates ~ -10 per token: exp of unreduced chunk cumsums would overflow fp32
    inputs = make_inputs(1, 100, 2, 32, 32, torch.float32, gate="scalar", strength=10.0)
    check_against_reference(
        chunk_simple_gla, naive_recurrent_simple_gla, inputs, backend, default_ratios(torch.float32, 2),
        output_final_state=False,
    )  # fmt: skip


def test_triton_long_sequence_stays_accurate():
    # T = 2048 (32 chunks) in fp16 through the Triton kernels (the interpreter on CPU), usual gate strength:
    # output, final state and every gradient within 1e-3 of the float64 reference (measured <= 6e-4)
    inputs = make_inputs(1, 2048, 1, 64, 64, torch.float16, gate="scalar", strength=1 / 16, num_states=1)
    check_against_reference(chunk_simple_gla, naive_chunk_simple_gla, inputs, "triton", 1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen(backend):
    lengths = [1, 70, 0, 29]
    inputs = make_inputs(1, sum(lengths), 2, 40, 24, torch.float32, gate="scalar", num_states=len(lengths))
    check_varlen_matches_loop(chunk_simple_gla, inputs, lengths, backend, tol(torch.float32, 2), g_gamma=GAMMA["both"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    lengths = [1, 40, 22]
    inputs = make_inputs(1, sum(lengths), 2, 36, 20, torch.float32, gate="scalar", num_states=len(lengths))
    cu = torch.tensor([0, 1, 41, 63], dtype=torch.int32)
    check_against_reference(
        fused_recurrent_simple_gla, naive_recurrent_simple_gla, inputs, backend, default_ratios(torch.float32, 2),
        g_gamma=GAMMA["both"], cu_seqlens=cu,
    )  # fmt: skip


def test_errors_name_the_argument():
    q, k, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8, 3\], expected \[2, 8, 2\]"):
        chunk_simple_gla(q, k, v, torch.randn(2, 8, 3))
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 15\]"):
        chunk_simple_gla(q, k[..., :15], v)
    with pytest.raises(ValueError, match=r"initial_state has shape \[1, 2, 16, 8\], expected \[2, 2, 16, 8\]"):
        chunk_simple_gla(q, k, v, initial_state=torch.randn(1, 2, 16, 8))
    with pytest.raises(TypeError, match="v has dtype torch.float16 but q has dtype torch.float32"):
        chunk_simple_gla(q, k, v.half())
    with pytest.raises(TypeError, match="q has dtype torch.int64"):
        fused_recurrent_simple_gla(q.long(), k, v)
    with pytest.raises(ValueError, match="batch size must be 1"):
        chunk_simple_gla(q, k, v, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="reverse"):
        fused_recurrent_simple_gla(q, k, v, reverse=True)


def test_state_stage_refuses_g_with_g_gamma():
    # the shared stages take G or a constant decay alone: the op folds g_gamma into G before calling them
    from fla.ops.common.chunk import chunk_layout
    from fla.ops.common.chunk_h import chunk_bwd_dh, chunk_fwd_h

    k, v = torch.randn(1, 8, 2, 16), torch.randn(1, 8, 2, 8)
    G, g_gamma = torch.randn(1, 8, 2), torch.randn(2)
    layout = chunk_layout(k, None)
    with pytest.raises(ValueError, match="g and g_gamma given together: fold g_gamma into G"):
        chunk_fwd_h(k, v, layout, g=G, g_gamma=g_gamma)
    with pytest.raises(ValueError, match="g and g_gamma given together"):
        chunk_bwd_dh(k, v, layout, g=G, g_gamma=g_gamma)


GPU_CASES = [  # B, T, H, D, dtype
    (8, 1024, 4, 64, torch.bfloat16),
    (2, 8192, 8, 128, torch.bfloat16),
    (4, 2048, 16, 128, torch.float16),
    (1, 4096, 32, 256, torch.bfloat16),
    (2, 1000, 4, 100, torch.float32),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", GPU_CASES)
@pytest.mark.parametrize("gates", ["g", "both"])
def test_chunk_gpu(B, T, H, D, dtype, gates):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_inputs(B, T, H, D, D, dtype, gate="scalar", strength=1 / 16, num_states=B, device=DEVICE)
    kwargs = {} if gates == "g" else {"g_gamma": -torch.rand(H, device=DEVICE) / 8}
    check_against_reference(
        chunk_simple_gla, naive_chunk_simple_gla, inputs, "triton", default_ratios(dtype, 2, 2), **kwargs
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_varlen_gpu(dtype):
    lengths = [1, 3000, 17, 64, 1000]
    inputs = make_inputs(1, sum(lengths), 8, 128, 128, dtype, gate="scalar", num_states=len(lengths), device=DEVICE)
    check_varlen_matches_loop(chunk_simple_gla, inputs, lengths, "triton", tol(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("K, V", [(256, 200), (130, 256)])
def test_large_head_dims(K, V):
    inputs = make_inputs(1, 70, 1, K, V, torch.float32, gate="scalar", num_states=1)
    for op in (chunk_simple_gla, fused_recurrent_simple_gla):
        check_against_reference(op, naive_recurrent_simple_gla, inputs, "triton", default_ratios(torch.float32, 2))
