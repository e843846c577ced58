"""chunk_lightning_attn / fused_recurrent_lightning_attn against float64 references (simple GLA with fixed slopes)."""

import math

import pytest
import torch

import fla.ops.lightning_attn.chunk as lightning_chunk
from fla.ops import chunk_lightning_attn as exported_chunk
from fla.ops import fused_recurrent_lightning_attn as exported_recurrent
from fla.ops.lightning_attn import (
    chunk_lightning_attn,
    fused_recurrent_lightning_attn,
    lightning_log_decays,
    naive_chunk_lightning_attn,
    naive_recurrent_lightning_attn,
)
from tests.fla.ops.gated import check_against_reference, check_varlen_matches_loop, default_ratios, make_inputs
from tests.harness import BACKENDS, DEVICE, assert_close, tol, using

LAYER = dict(layer_idx=1, num_layers=4)


def test_public_names():
    assert exported_chunk is chunk_lightning_attn and exported_recurrent is fused_recurrent_lightning_attn


@pytest.mark.parametrize("H, layer_idx, num_layers", [(6, 0, 1), (8, 3, 12), (16, 11, 12)])
def test_decays_are_fla_slopes(H, layer_idx, num_layers):
    expected = [-(8 / H) * (1 - layer_idx / num_layers) * h for h in range(H)]
    decays = lightning_log_decays(H, layer_idx, num_layers)
    assert decays.dtype == torch.float32 and decays[0] == 0  # head 0 keeps everything
    torch.testing.assert_close(decays, torch.tensor(expected), rtol=1e-6, atol=0)


def _loop_reference(q, k, v, layer_idx, num_layers, scale, h0):
    """Written out in float64 from the README formula (independent of the simple GLA code)."""
    B, T, H, K = q.shape
    q, k, v, S = q.double(), k.double(), v.double(), h0.double().clone()
    gamma = torch.tensor([math.exp(-(8 / H) * (1 - layer_idx / num_layers) * h) for h in range(H)], dtype=torch.float64)
    o = torch.empty(B, T, H, v.shape[-1], dtype=torch.float64)
    for t in range(T):
        S = gamma[None, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o, S


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_matches_written_out_recurrence(backend):
    inputs = make_inputs(2, 67, 4, 16, 12, torch.float32, num_states=2)
    with using(backend), torch.no_grad():
        o, ht = chunk_lightning_attn(
            inputs["q"], inputs["k"], inputs["v"], 2, 5, scale=0.25, initial_state=inputs["h0"],
            output_final_state=True,
        )  # fmt: skip
    ref_o, ref_ht = _loop_reference(inputs["q"], inputs["k"], inputs["v"], 2, 5, 0.25, inputs["h0"])
    assert_close("o", ref_o, o, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


def test_cpu_chunked_form_matches_recurrence_float64():
    inputs = make_inputs(2, 100, 3, 36, 20, torch.float64, num_states=2)
    check_against_reference(
        naive_chunk_lightning_attn, naive_recurrent_lightning_attn, inputs, "torch", tol(torch.float64), **LAYER
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, T", [(torch.float32, 100), (torch.float32, 63), (torch.float16, 63)])
def test_chunk(backend, dtype, T):
    inputs = make_inputs(2, T, 2, 60, 32, dtype, num_states=2)
    check_against_reference(
        chunk_lightning_attn, naive_recurrent_lightning_attn, inputs, backend, default_ratios(dtype, 2), **LAYER
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_strong_decays(backend):
    # 16 heads at layer 0: log decays down to -7.5 per token
    inputs = make_inputs(1, 70, 16, 16, 16, torch.float32, num_states=1)
    check_against_reference(
        chunk_lightning_attn, naive_recurrent_lightning_attn, inputs, backend, default_ratios(torch.float32, 2),
        layer_idx=0, num_layers=24, scale=0.5,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_against_reference(backend):
    lengths = [1, 70, 1, 29]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 2, 40, 24, torch.float32, num_states=len(lengths))
    check_against_reference(
        chunk_lightning_attn, naive_recurrent_lightning_attn, inputs, backend, default_ratios(torch.float32, 2),
        cu_seqlens=cu, **LAYER,
    )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_matches_loop(backend):
    lengths = [1, 65, 1, 30]
    inputs = make_inputs(1, sum(lengths), 2, 32, 32, torch.float32, num_states=len(lengths))
    check_varlen_matches_loop(chunk_lightning_attn, inputs, lengths, backend, tol(torch.float32, 2), **LAYER)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent(backend):
    lengths = [1, 40, 22]
    cu = torch.tensor([0, 1, 41, 63], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 2, 36, 20, torch.float32, num_states=len(lengths))
    check_against_reference(
        fused_recurrent_lightning_attn, naive_recurrent_lightning_attn, inputs, backend,
        default_ratios(torch.float32, 2), cu_seqlens=cu, **LAYER,
    )  # fmt: skip


def test_without_initial_or_final_state():
    inputs = make_inputs(2, 33, 2, 16, 16, torch.float32)
    check_against_reference(
        chunk_lightning_attn, naive_recurrent_lightning_attn, inputs, "torch", default_ratios(torch.float32, 2),
        output_final_state=False, **LAYER,
    )  # fmt: skip


@pytest.mark.parametrize(
    "layer_idx, num_layers, message",
    [
        (4, 4, r"layer_idx=4 must lie in \[0, num_layers=4\)"),
        (-1, 4, r"layer_idx=-1 must lie in \[0, num_layers=4\)"),
        (0, 0, "num_layers must be >= 1, got num_layers=0"),
        (1.0, 4, "layer_idx must be an int, got 1.0"),
        (0, True, "num_layers must be an int, got True"),
    ],
)
def test_bad_layer_arguments_raise_before_any_launch(monkeypatch, layer_idx, num_layers, message):
    def launched(*args, **kwargs):
        raise AssertionError("the op ran")

    monkeypatch.setattr(lightning_chunk, "chunk_simple_gla", launched)
    q = torch.randn(1, 8, 2, 16)
    with pytest.raises(ValueError, match=message):
        chunk_lightning_attn(q, q, q, layer_idx, num_layers)
    with pytest.raises(ValueError, match=message):
        fused_recurrent_lightning_attn(q, q, q, layer_idx, num_layers)


def test_bad_shapes_name_the_argument():
    q, v = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8)
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 15\]"):
        chunk_lightning_attn(q, q[..., :15], v, **LAYER)
    with pytest.raises(ValueError, match=r"initial_state has shape \[3, 2, 16, 8\]"):
        chunk_lightning_attn(q, q, v, initial_state=torch.randn(3, 2, 16, 8), **LAYER)
    with pytest.raises(ValueError, match="cu_seqlens given, so the batch size must be 1"):
        chunk_lightning_attn(q, q, v, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32), **LAYER)


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", [(4, 4096, 16, 128, torch.bfloat16), (2, 2048, 8, 64, torch.float16)])
def test_chunk_gpu(B, T, H, D, dtype):
    inputs = make_inputs(B, T, H, D, D, dtype, num_states=B, device=DEVICE)
    check_against_reference(
        chunk_lightning_attn, naive_chunk_lightning_attn, inputs, "triton", default_ratios(dtype, 2),
        layer_idx=3, num_layers=24,
    )  # fmt: skip
