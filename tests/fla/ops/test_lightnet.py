"""chunk_lightnet / fused_recurrent_lightnet against a float64 token-by-token reference."""

import pytest
import torch

import fla.ops.lightnet.chunk as lightnet_chunk
from fla.ops import chunk_lightnet as exported_chunk
from fla.ops import fused_recurrent_lightnet as exported_recurrent
from fla.ops.lightnet import (
    chunk_lightnet,
    fused_recurrent_lightnet,
    lightnet_gates,
    naive_chunk_lightnet,
    naive_recurrent_lightnet,
)
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, assert_close, tol


def lightnet_inputs(B, T, H, K, V, dtype, num_states=None, z0=True, logit_scale=1.0):
    inputs = make_inputs(B, T, H, K, V, dtype, num_states=num_states)
    with torch.no_grad():
        inputs["k"].mul_(logit_scale)
    if num_states is not None and z0:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        inputs["z0"] = torch.randn(num_states, 1, H, K, device=DEVICE, dtype=state_dtype).requires_grad_()
    return inputs


def cu_of(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


def test_public_names():
    assert exported_chunk is chunk_lightnet and exported_recurrent is fused_recurrent_lightnet


def test_gates_match_definition():
    x = torch.randn(1, 150, 2, 4, dtype=torch.float64) * 4
    cu = torch.tensor([0, 1, 131, 132, 150], dtype=torch.int32)
    z0 = torch.randn(4, 1, 2, 4, dtype=torch.float64)
    k, g, zt = lightnet_gates(x, z0, cu, torch.float64)
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        z = torch.logaddexp(z0[n], torch.logcumsumexp(x[0, a:b], 0))
        prev = torch.cat([z0[n], z[:-1]], 0)
        torch.testing.assert_close(k[0, a:b], torch.exp(x[0, a:b] - z))
        torch.testing.assert_close(g[0, a:b], prev - z)
        torch.testing.assert_close(zt[n, 0], z[-1])


def test_cpu_chunked_form_matches_recurrence_float64():
    inputs = lightnet_inputs(2, 100, 3, 20, 12, torch.float64, num_states=2)
    check_against_reference(naive_chunk_lightnet, naive_recurrent_lightnet, inputs, "torch", tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, T", [(torch.float32, 100), (torch.float32, 63), (torch.float16, 63)])
def test_chunk(backend, dtype, T):
    inputs = lightnet_inputs(2, T, 2, 32, 24, dtype, num_states=2)
    check_against_reference(chunk_lightnet, naive_recurrent_lightnet, inputs, backend, default_ratios(dtype, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_strong_logits(backend):
    # key logits of scale 8: the normalizer jumps by many nats, decays down to ~exp(-20)
    inputs = lightnet_inputs(1, 70, 2, 16, 16, torch.float32, num_states=1, logit_scale=8.0)
    check_against_reference(
        chunk_lightnet, naive_recurrent_lightnet, inputs, backend, default_ratios(torch.float32, 4), scale=0.5
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_against_reference(backend):
    lengths = [1, 150, 1, 29]  # 150 > 2 pieces: the carry between pieces
    inputs = lightnet_inputs(1, sum(lengths), 2, 16, 12, torch.float32, num_states=len(lengths), logit_scale=3.0)
    check_against_reference(
        chunk_lightnet, naive_recurrent_lightnet, inputs, backend, default_ratios(torch.float32, 2),
        cu_seqlens=cu_of(lengths),
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_matches_loop(backend):
    lengths = [1, 65, 1, 30]
    inputs = lightnet_inputs(1, sum(lengths), 2, 16, 16, torch.float32, num_states=len(lengths))
    check_varlen_matches_loop(chunk_lightnet, inputs, lengths, backend, tol(torch.float32, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    lengths = [1, 40, 22]
    inputs = lightnet_inputs(1, sum(lengths), 2, 20, 12, torch.float32, num_states=len(lengths))
    check_against_reference(
        fused_recurrent_lightnet, naive_recurrent_lightnet, inputs, backend, default_ratios(torch.float32, 2),
        cu_seqlens=cu_of(lengths),
    )  # fmt: skip


@pytest.mark.parametrize("which", ["z0 only", "h0 only", "none"])
def test_partial_initial_state(which):
    # (None, z0) and (h0, None), as a cache may hold, and no state at all
    inputs = lightnet_inputs(2, 33, 2, 16, 8, torch.float32, num_states=2)
    q, k, v, h0, z0 = (inputs[n].detach() for n in ("q", "k", "v", "h0", "z0"))
    state = {"z0 only": (None, z0), "h0 only": (h0, None), "none": None}[which]
    ref_state = None if state is None else tuple(None if s is None else s.double() for s in state)
    o, (ht, zt) = chunk_lightnet(q, k, v, initial_state=state, output_final_state=True)
    ref_o, (ref_ht, ref_zt) = naive_recurrent_lightnet(
        q.double(), k.double(), v.double(), initial_state=ref_state, output_final_state=True
    )
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))
    assert_close("zt", ref_zt, zt, tol(torch.float32, 2))


def test_state_v_first_and_no_final_state():
    inputs = lightnet_inputs(2, 40, 2, 16, 8, torch.float32, num_states=2)
    q, k, v, h0, z0 = (inputs[n].detach() for n in ("q", "k", "v", "h0", "z0"))
    o, (ht, zt) = chunk_lightnet(q, k, v, initial_state=(h0, z0), output_final_state=True)
    o2, (ht2, zt2) = chunk_lightnet(
        q, k, v, initial_state=(h0.transpose(-1, -2), z0), output_final_state=True, state_v_first=True
    )
    torch.testing.assert_close(o2, o)
    torch.testing.assert_close(ht2, ht.transpose(-1, -2))
    o3, (ht3, zt3) = fused_recurrent_lightnet(q, k, v, initial_state=(h0, z0))
    assert ht3 is None and zt3.shape == (2, 1, 2, 16)  # fla: the log normalizer is always returned
    assert_close("o", o, o3, tol(torch.float32, 2))


def test_empty_prefix_first_gate_is_zero():
    x, cu = torch.randn(1, 5, 1, 3), torch.tensor([0, 2, 5], dtype=torch.int32)
    k, g, zt = lightnet_gates(x, None, cu, torch.float32)
    assert (g[0, [0, 2]] == 0).all() and torch.isfinite(zt).all()
    assert torch.allclose(k[0, 0], torch.ones(1, 3)) and torch.allclose(k[0, 2], torch.ones(1, 3))
    # a carried normalizer of -inf (an empty sequence's) starts afresh, as no z0 does
    z0 = torch.stack([torch.full((1, 1, 3), float("-inf")), torch.randn(1, 1, 3)])
    k2, g2, zt2 = lightnet_gates(x, z0, cu, torch.float32)
    assert torch.equal(g2[0, :2], g[0, :2]) and torch.equal(k2[0, :2], k[0, :2]) and torch.equal(zt2[0], zt[0])
    assert (g2[0, 2] < 0).all() and torch.isfinite(g2).all()


def test_bad_inputs_name_the_argument(monkeypatch):
    def launched(*args, **kwargs):
        raise AssertionError("the op ran")

    monkeypatch.setattr(lightnet_chunk, "chunk_gla", launched)
    monkeypatch.setattr(lightnet_chunk, "lightnet_gates", launched)
    q, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 15\]"):
        chunk_lightnet(q, q[..., :15], v)
    with pytest.raises(ValueError, match=r"initial_state has shape \[3, 2, 16, 8\]"):
        chunk_lightnet(q, q, v, initial_state=(torch.randn(3, 2, 16, 8), None))
    with pytest.raises(ValueError, match=r"initial_state\[1\] \(log normalizer\) has shape \[2, 2, 16\]"):
        chunk_lightnet(q, q, v, initial_state=(None, torch.randn(2, 2, 16)))
    with pytest.raises(ValueError, match="initial_state must be None or a pair"):
        chunk_lightnet(q, q, v, initial_state=torch.randn(2, 2, 16, 8))
    with pytest.raises(ValueError, match="cu_seqlens given, so the batch size must be 1"):
        chunk_lightnet(q, q, v, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens"):
        chunk_lightnet(q[:1], q[:1], v[:1], cu_seqlens=torch.tensor([0, 5, 3, 8], dtype=torch.int32))


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", [(4, 4096, 16, 128, torch.bfloat16), (2, 2048, 8, 64, torch.float16)])
def test_chunk_gpu(B, T, H, D, dtype):
    inputs = lightnet_inputs(B, T, H, D, D, dtype, num_states=B)
    check_against_reference(chunk_lightnet, naive_chunk_lightnet, inputs, "triton", default_ratios(dtype, 2))
