"""chunk_gla / fused_recurrent_gla (vector gates) against the float64 recurrent reference."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops.gla import chunk_gla, fused_recurrent_gla, naive_chunk_gla, naive_recurrent_gla
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, assert_close, saved_for_backward, tol, using


@pytest.mark.parametrize("strength", [1.0, 10.0])
def test_cpu_chunked_form_matches_recurrence_float64(strength):
    inputs = make_inputs(2, 100, 2, 36, 20, torch.float64, gate="vector", strength=strength, num_states=2)
    check_against_reference(naive_chunk_gla, naive_recurrent_gla, inputs, "torch", tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "B, T, H, dtype, strength",
    [(2, 63, 2, torch.float32, 1.0), (1, 100, 2, torch.float16, 1.0), (1, 100, 1, torch.float32, 10.0)],
    ids=["fp32", "fp16", "fp32-strong-decay"],
)
def test_chunk(backend, B, T, H, dtype, strength):
    # strength 10: log gates ~ -10 per token, chunk cumsums ~ -700: only sub-chunked exponents stay finite
    inputs = make_inputs(B, T, H, 40, 24, dtype, gate="vector", strength=strength, num_states=B)
    check_against_reference(chunk_gla, naive_recurrent_gla, inputs, backend, default_ratios(dtype, 2, 2), scale=0.4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen(backend):
    lengths = [1, 68, 0, 12]
    inputs = make_inputs(1, sum(lengths), 1, 36, 20, torch.float32, gate="vector", num_states=len(lengths))
    check_varlen_matches_loop(chunk_gla, inputs, lengths, backend, tol(torch.float32, 2), loop_backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    inputs = make_inputs(1, 63, 1, 36, 20, torch.float32, gate="vector", num_states=3)
    cu = torch.tensor([0, 1, 41, 63], dtype=torch.int32)
    check_against_reference(
        fused_recurrent_gla, naive_recurrent_gla, inputs, backend, default_ratios(torch.float32, 2), cu_seqlens=cu
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent_value_gates_forward(backend):
    q, k, v = torch.randn(2, 30, 2, 20), torch.randn(2, 30, 2, 20), torch.randn(2, 30, 2, 36)
    gk, gv = F.logsigmoid(torch.randn(2, 30, 2, 20)), F.logsigmoid(torch.randn(2, 30, 2, 36))
    h0 = torch.randn(2, 2, 20, 36)
    with using(backend):
        o, ht = fused_recurrent_gla(q, k, v, gk, gv, initial_state=h0, output_final_state=True)
    ref_o, ref_ht = naive_recurrent_gla(
        *(x.double() for x in (q, k, v, gk, gv)), initial_state=h0.double(), output_final_state=True
    )
    assert_close("o", ref_o, o, tol(torch.float32))
    assert_close("ht", ref_ht, ht, tol(torch.float32))


def test_scores_in_the_values_dtype_change_no_result():
    # the output and dv stages round the vector-gate scores A to the values' dtype before their products, so A
    # stored in that dtype (half the bytes the backward keeps) gives bitwise the same o and dv as a float32 A
    from fla.ops.common.chunk import chunk_layout
    from fla.ops.common.chunk_bwd import chunk_bwd_dv
    from fla.ops.common.chunk_h import chunk_bwd_dh, chunk_fwd_h
    from fla.ops.common.chunk_intra_gk import chunk_gk_fwd_A
    from fla.ops.common.chunk_o import chunk_fwd_o
    from fla.ops.common.cumsum import chunk_local_cumsum

    x = make_inputs(2, 100, 2, 36, 20, torch.float16, gate="vector")
    q, k, v, g = (x[n].detach() for n in ("q", "k", "v", "g"))
    do, layout = torch.randn_like(v), chunk_layout(q, None)
    Gk = chunk_local_cumsum(g, layout)
    h, _ = chunk_fwd_h(k, v, layout, gk=Gk)
    dh, _ = chunk_bwd_dh(q, do, layout, gk=Gk, scale=0.3)
    A32, A16 = (chunk_gk_fwd_A(q, k, Gk, layout, 0.3, dtype) for dtype in (torch.float32, torch.float16))
    assert A16.dtype == torch.float16 and torch.equal(A16, A32.half())
    output = lambda A: chunk_fwd_o(q, k, v, h, layout, 0.3, gk=Gk, A=A)
    value_grad = lambda A: chunk_bwd_dv(q, k, do, dh, layout, 0.3, gk=Gk, A=A)
    if DEVICE.type == "cpu":  # the interpreter: the same products in the same order, bit for bit
        assert torch.equal(output(A16), output(A32))
        assert torch.equal(value_grad(A16), value_grad(A32))
    else:  # compiled: A's dtype is part of the autotune key, and another config may order the dot's sums otherwise
        assert_close("o (fp16 A vs fp32 A)", output(A32), output(A16), 1e-4)
        assert_close("dv (fp16 A vs fp32 A)", value_grad(A32), value_grad(A16), 1e-4)


def test_backward_keeps_no_float32_activation():
    # what chunk_gla keeps for its backward: q, k, v, g and the scores A [B, T, H, 64], all in the inputs' dtype
    x = make_inputs(2, 100, 2, 36, 20, torch.float16, gate="vector")
    with saved_for_backward() as kept, using("triton"):
        chunk_gla(x["q"], x["k"], x["v"], x["g"])
    saved = [(tuple(t.shape), t.dtype) for t in kept]
    assert ((2, 100, 2, 64), torch.float16) in saved, saved
    assert all(dtype == torch.float16 for _, dtype in saved), saved


def test_errors_name_the_argument():
    q, k, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    with pytest.raises(ValueError, match=r"g has shape \[2, 8, 2\], expected \[2, 8, 2, 16\]"):
        chunk_gla(q, k, v, torch.randn(2, 8, 2))
    with pytest.raises(ValueError, match=r"gv has shape \[2, 8, 2, 16\], expected \[2, 8, 2, 8\]"):
        fused_recurrent_gla(q, k, v, gv=torch.randn(2, 8, 2, 16))
    with pytest.raises(ValueError, match=r"v has shape \[2, 7, 2, 8\]"):
        chunk_gla(q, k, v[:, :7], torch.randn(2, 8, 2, 16))


GPU_CASES = [  # B, T, H, D, dtype, gate strength
    (8, 1024, 4, 64, torch.bfloat16, 1.0),
    (2, 8192, 8, 128, torch.bfloat16, 1 / 16),
    (4, 2048, 16, 128, torch.float16, 1.0),
    (1, 2048, 4, 256, torch.bfloat16, 1 / 16),
    (2, 1000, 4, 100, torch.float32, 1.0),
    (2, 512, 4, 64, torch.float32, 10.0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype, strength", GPU_CASES)
def test_chunk_gpu(B, T, H, D, dtype, strength):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_inputs(B, T, H, D, D, dtype, gate="vector", strength=strength, num_states=B, device=DEVICE)
    check_against_reference(chunk_gla, naive_chunk_gla, inputs, "triton", default_ratios(dtype, 2, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_varlen_gpu(dtype):
    lengths = [1, 3000, 17, 64, 1000]
    inputs = make_inputs(1, sum(lengths), 8, 128, 128, dtype, gate="vector", num_states=len(lengths), device=DEVICE)
    check_varlen_matches_loop(chunk_gla, inputs, lengths, "triton", tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_recurrent_gpu(dtype):
    inputs = make_inputs(32, 16, 16, 128, 128, dtype, gate="vector", num_states=32, device=DEVICE)
    check_against_reference(fused_recurrent_gla, naive_recurrent_gla, inputs, "triton", default_ratios(dtype, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("K, V", [(256, 200), (130, 256)])
def test_large_head_dims(K, V):
    inputs = make_inputs(1, 70, 1, K, V, torch.float32, gate="vector", num_states=1)
    for op in (chunk_gla, fused_recurrent_gla):
        check_against_reference(op, naive_recurrent_gla, inputs, "triton", default_ratios(torch.float32, 2))
