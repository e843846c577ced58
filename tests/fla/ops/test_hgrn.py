"""chunk_hgrn / fused_recurrent_hgrn against a float64 reference (the element-wise gated scan)."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops import chunk_hgrn as exported_chunk
from fla.ops import fused_recurrent_hgrn as exported_recurrent
from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn, naive_chunk_hgrn, naive_recurrent_hgrn
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using

OPS = (chunk_hgrn, fused_recurrent_hgrn)


def _loop_reference(x, g, h0, cu_seqlens):
    """Written out in float64 from the README formula, sequence by sequence."""
    bounds = [0, x.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    o = torch.empty(x.shape, dtype=torch.float64)
    states = []
    for b in range(x.shape[0]):
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            n = b if cu_seqlens is None else i
            h = torch.zeros(x.shape[-1], dtype=torch.float64) if h0 is None else h0[n].double()
            for t in range(bos, eos):
                h = g[b, t].double().exp() * h + x[b, t].double()
                o[b, t] = h
            states.append(h)
    return o, torch.stack(states)


def _inputs(B, T, D, dtype, num_states=None, decay_scale=1.0):
    x = torch.randn(B, T, D, device=DEVICE, dtype=dtype)
    g = (F.logsigmoid(torch.randn(B, T, D, device=DEVICE)) * decay_scale).to(dtype)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    h0 = None if num_states is None else torch.randn(num_states, D, device=DEVICE, dtype=state_dtype)
    return x, g, h0


def _check(op, backend, x, g, h0, ratio, cu_seqlens=None, grad_ratio=None):
    leaves = {"x": x.requires_grad_(), "g": g.requires_grad_()}
    if h0 is not None:
        leaves["initial_state"] = h0.requires_grad_()
    refs = {k: to_reference(v) for k, v in leaves.items()}
    with using(backend):
        o, ht = op(**leaves, output_final_state=True, cu_seqlens=cu_seqlens)
    ref_o, ref_ht = naive_recurrent_hgrn(**refs, output_final_state=True, cu_seqlens=cu_seqlens)
    assert o.dtype == x.dtype and ht.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert_close("o", ref_o, o, ratio)
    assert_close("ht", ref_ht, ht, ratio)
    do, dht = torch.randn_like(ref_o), torch.randn_like(ref_ht)
    assert_grads_close(leaves, refs, (o, ht), (ref_o, ref_ht), (do, dht), grad_ratio or ratio)


def test_public_names():
    assert exported_chunk is chunk_hgrn and exported_recurrent is fused_recurrent_hgrn


def test_naive_recurrent_matches_written_out_loop():
    lengths = [1, 40, 1, 23]
    cu = torch.tensor([0, 1, 41, 42, 65], dtype=torch.int32)
    x, g, h0 = _inputs(1, 65, 12, torch.float64, num_states=4)
    o, ht = naive_recurrent_hgrn(x, g, h0, True, cu_seqlens=cu)
    ref_o, ref_ht = _loop_reference(x, g, h0, cu)
    assert_close("o", ref_o, o, tol(torch.float64))
    assert_close("ht", ref_ht, ht, tol(torch.float64))
    assert len(lengths) == ht.shape[0]


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_naive_chunk_matches_recurrent_float64(chunk_size):
    x, g, h0 = _inputs(2, 100, 20, torch.float64, num_states=2, decay_scale=4.0)
    o, ht = naive_chunk_hgrn(x, g, h0, True, chunk_size=chunk_size)
    ref_o, ref_ht = _loop_reference(x, g, h0, None)
    assert_close("o", ref_o, o, tol(torch.float64))
    assert_close("ht", ref_ht, ht, tol(torch.float64))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("T, D", [(1, 60), (63, 100), (100, 60)])
def test_torch_path_float64(op, T, D):
    x, g, h0 = _inputs(2, T, D, torch.float64, num_states=2)
    _check(op, "torch", x, g, h0, tol(torch.float64))


def test_torch_path_float64_long():
    # both ops run the same PyTorch path on CPU: one long check is enough
    x, g, h0 = _inputs(1, 1000, 100, torch.float64, num_states=1)
    _check(chunk_hgrn, "torch", x, g, h0, tol(torch.float64))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T, D", [(1, 60), (63, 100), (100, 60)])
def test_float32(op, backend, T, D):
    x, g, h0 = _inputs(2, T, D, torch.float32, num_states=2)
    _check(op, backend, x, g, h0, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
def test_triton_long_sequence(op):
    x, g, h0 = _inputs(1, 1000, 60, torch.float32, num_states=1)
    _check(op, "triton", x, g, h0, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_float16(op, backend):
    x, g, h0 = _inputs(2, 63, 60, torch.float16, num_states=2)
    _check(op, backend, x, g, h0, tol(torch.float16, 2))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_strong_decays(op, backend):
    # log gates down to about -20 per token: the state is forgotten within a token or two
    x, g, h0 = _inputs(2, 130, 36, torch.float32, num_states=2, decay_scale=8.0)
    _check(op, backend, x, g, h0, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_without_initial_state(op, backend):
    x, g, _ = _inputs(2, 70, 20, torch.float32)
    _check(op, backend, x, g, None, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [[1, 70, 1, 29], [64, 1, 65, 1], [1], [3, 0, 5]])
def test_varlen(op, backend, lengths):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    x, g, h0 = _inputs(1, sum(lengths), 60, torch.float32, num_states=len(lengths))
    _check(op, backend, x, g, h0, tol(torch.float32, 2), cu_seqlens=cu)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_matches_per_sequence_calls(op, backend):
    lengths = [1, 65, 1, 30]
    cu = torch.tensor([0, 1, 66, 67, 97], dtype=torch.int64, device=DEVICE)
    x, g, h0 = _inputs(1, 97, 40, torch.float32, num_states=4)
    with using(backend), torch.no_grad():
        o, ht = op(x, g, h0, output_final_state=True, cu_seqlens=cu)
        for i, (bos, eos) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            oi, hi = op(x[:, bos:eos], g[:, bos:eos], h0[i : i + 1], output_final_state=True)
            assert_close(f"o[{i}]", oi, o[:, bos:eos], tol(torch.float32, 2))
            assert_close(f"ht[{i}]", hi, ht[i : i + 1], tol(torch.float32, 2))
    assert len(lengths) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_matches_recurrent_and_no_final_state(backend):
    x, g, h0 = _inputs(2, 90, 30, torch.float32, num_states=2)
    with using(backend), torch.no_grad():
        o1, ht1 = chunk_hgrn(x, g, h0)
        o2, ht2 = fused_recurrent_hgrn(x, g, h0)
    assert ht1 is None and ht2 is None
    assert_close("o", o2, o1, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
def test_bad_inputs(op):
    x, g, h0 = _inputs(2, 10, 8, torch.float32, num_states=2)
    with pytest.raises(ValueError, match="x has shape"):
        op(x[0], g[0])
    with pytest.raises(ValueError, match="g has shape"):
        op(x, g[:, :5])
    with pytest.raises(ValueError, match="g has shape"):
        op(x, g[..., 0])
    with pytest.raises(ValueError, match="initial_state has shape"):
        op(x, g, h0[:1])
    with pytest.raises(TypeError, match="x has dtype"):
        op(x.long(), g)
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(x, g, cu_seqlens=torch.tensor([0, 10, 20], dtype=torch.int32))  # B != 1
    x1, g1 = x[:1], g[:1]
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(x1, g1, cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32))  # last != T
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(x1, g1, cu_seqlens=torch.tensor([0, 6, 4, 10], dtype=torch.int32))  # decreasing
    with pytest.raises(TypeError, match="cu_seqlens"):
        op(x1, g1, cu_seqlens=torch.tensor([0.0, 10.0]))


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "B, T, D, dtype, lengths",
    [
        (4, 4096, 1024, torch.bfloat16, None),  # the 340M layer's width (hidden 1024) at the benchmark's T
        (1, 4096, 1000, torch.float32, [1, 3000, 17, 1, 1077]),  # varlen with length-1 sequences, odd width
    ],
)
def test_real_sizes_gpu(op, B, T, D, dtype, lengths):
    cu = None
    if lengths is not None:
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    x, g, h0 = _inputs(B, T, D, dtype, num_states=B if lengths is None else len(lengths))
    _check(op, "triton", x, g, h0, tol(dtype, 2), cu_seqlens=cu)
