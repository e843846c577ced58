"""causal_conv1d / ShortConvolution vs a float64 loop-over-time reference (both backends)."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules.conv import ShortConvolution, causal_conv1d
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using


def conv_reference(x, weight, bias=None, residual=None, initial_state=None, activation=None, cu_seqlens=None):
    """Decode token by token: roll the [B, D, W] window, dot it with the filters. Returns (y, final states)."""
    if cu_seqlens is not None:  # each packed sequence on its own
        outs = []
        for n, (s, e) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
            r = residual[:, s:e] if residual is not None else None
            h0 = initial_state[n : n + 1] if initial_state is not None else None
            outs.append(conv_reference(x[:, s:e], weight, bias, r, h0, activation))
        return torch.cat([y for y, _ in outs], 1), torch.cat([h for _, h in outs], 0)
    B, T, D = x.shape
    window = initial_state if initial_state is not None else x.new_zeros(B, D, weight.shape[1])
    ys = []
    for t in range(T):
        window = torch.cat([window[..., 1:], x[:, t, :, None]], -1)
        z = (window * weight).sum(-1) + (bias if bias is not None else 0)
        y = F.silu(z) if activation in ("silu", "swish") else z
        ys.append(y + (residual[:, t] if residual is not None else 0))
    return torch.stack(ys, 1) if ys else x.clone(), window


def make_inputs(B, T, D, W, dtype, bias=True, residual=True, initial_state=True, n=None):
    def leaf(*shape):
        return torch.randn(*shape, device=DEVICE).to(dtype).requires_grad_()

    return {
        "x": leaf(B, T, D),
        "weight": leaf(D, W),
        "bias": leaf(D) if bias else None,
        "residual": leaf(B, T, D) if residual else None,
        "initial_state": leaf(n or B, D, W) if initial_state else None,
    }


def check_against_reference(backend, inputs, activation, cu_seqlens=None, output_final_state=True, scale=1.0):
    ref_inputs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        y, ht = causal_conv1d(
            **inputs, output_final_state=output_final_state, activation=activation, cu_seqlens=cu_seqlens
        )
    y_ref, ht_ref = conv_reference(**ref_inputs, activation=activation, cu_seqlens=cu_seqlens)
    dtype = inputs["x"].dtype
    assert y.dtype == dtype
    assert_close("y", y_ref, y, tol(dtype, scale))
    dy = torch.randn_like(y_ref)
    if output_final_state:
        assert ht.dtype == (inputs["initial_state"] if inputs["initial_state"] is not None else inputs["x"]).dtype
        assert_close("final_state", ht_ref, ht, tol(dtype, scale))
        outs, ref_outs, douts = (y, ht), (y_ref, ht_ref), (dy, torch.randn_like(ht_ref))
    else:
        assert ht is None
        outs, ref_outs, douts = y, y_ref, dy
    present = {k: v for k, v in inputs.items() if v is not None}
    assert_grads_close(present, {k: ref_inputs[k] for k in present}, outs, ref_outs, douts, tol(dtype, scale))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "D, W, activation, bias, residual, initial_state, final_state",
    [
        (60, 4, "silu", True, True, True, True),
        (100, 3, None, False, False, False, False),
        (100, 4, "silu", True, False, False, True),  # final state fed by x alone
        (60, 2, "swish", False, True, True, False),
        (60, 4, None, True, False, True, True),  # no activation: dz is dy, states on both ends
    ],
)
def test_conv_forward_backward(backend, dtype, D, W, activation, bias, residual, initial_state, final_state):
    inputs = make_inputs(2, 63, D, W, dtype, bias, residual, initial_state)
    check_against_reference(backend, inputs, activation, output_final_state=final_state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_varlen_no_leakage(backend):
    # lengths 1, 0, 20, 3 (< W), 39: every sequence starts from its own state
    cu_seqlens = torch.tensor([0, 1, 1, 21, 24, 63], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, 63, 60, 4, torch.float32, n=5)
    check_against_reference(backend, inputs, "silu", cu_seqlens=cu_seqlens)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_varlen_without_state_equals_separate_calls(backend):
    cu_seqlens = torch.tensor([0, 1, 30, 63], dtype=torch.int64, device=DEVICE)
    x = torch.randn(1, 63, 100, device=DEVICE)
    w = torch.randn(100, 4, device=DEVICE)
    with using(backend):
        y, ht = causal_conv1d(x, w, activation="silu", output_final_state=True, cu_seqlens=cu_seqlens)
        for i in range(3):
            s, e = cu_seqlens[i].item(), cu_seqlens[i + 1].item()
            y_i, ht_i = causal_conv1d(x[:, s:e], w, activation="silu", output_final_state=True)
            assert_close(f"y[{i}]", y_i, y[:, s:e], 1e-6)
            assert_close(f"final_state[{i}]", ht_i[0], ht[i], 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_convolution_matches_nn_conv1d_checkpoint(backend):
    D, W = 60, 4
    conv = torch.nn.Conv1d(D, D, W, groups=D, padding=W - 1, bias=True, device=DEVICE)
    module = ShortConvolution(D, W, bias=True, activation="silu", device=DEVICE)
    module.load_state_dict(conv.state_dict())
    x = torch.randn(2, 63, D, device=DEVICE)
    with using(backend):
        y, ht = module(x)
    expected = F.silu(conv(x.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2)
    assert ht is None
    assert_close("y", expected.detach(), y, 1e-5)
    assert module.state_size == D * W
    assert module.weight.shape == (D, 1, W)


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_convolution_mask_zeroes_padding(backend):
    module = ShortConvolution(60, 4, bias=True, device=DEVICE)
    x = torch.randn(2, 63, 60, device=DEVICE)
    mask = torch.ones(2, 63, device=DEVICE, dtype=torch.long)
    mask[0, :10] = 0  # left padding
    mask[1, 50:] = 0  # right padding
    with using(backend):
        y, _ = module(x, mask=mask)
    w, b = to_reference(module.weight[:, 0], False), to_reference(module.bias, False)
    y_ref, _ = conv_reference(x.double() * mask[..., None], w, b, activation="silu")
    assert_close("y", y_ref, y.detach(), tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_short_convolution_step_equals_forward(backend, dtype):
    B, T, D, W, prefill = 3, 9, 60, 4, 2  # prefill 2 < W tokens, then 7 one-token steps
    module = ShortConvolution(D, W, bias=True, activation="silu", device=DEVICE)
    x = torch.randn(B, T, D, device=DEVICE, dtype=dtype)
    residual = torch.randn(B, T, D, device=DEVICE, dtype=dtype)
    with using(backend), torch.no_grad():
        module.to(dtype)
        y_full, ht_full = module(x, residual=residual, output_final_state=True)
        y_pre, cache = module(x[:, :prefill], residual=residual[:, :prefill], output_final_state=True)
        ys = [y_pre]
        for t in range(prefill, T):
            step_x = x[:, t : t + 1] if t % 2 else x[:, t]  # both [B, 1, D] and [B, D]
            y_t, same = module.step(step_x, cache, residual=residual[:, t].reshape(step_x.shape))
            assert same is cache and y_t.shape == step_x.shape
            ys.append(y_t.reshape(B, 1, D))
    assert_close("steps", y_full, torch.cat(ys, 1), tol(dtype))
    assert_close("cache", ht_full, cache, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_from_zero_cache_varlen_decoding(backend):
    # decoding N packed sequences: x [N, D], cache [N, D, W]
    module = ShortConvolution(100, 3, device=DEVICE)
    x = torch.randn(4, 5, 100, device=DEVICE)
    cache = torch.zeros(4, 100, 3, device=DEVICE)
    with using(backend), torch.no_grad():
        y_full, _ = module(x)
        steps = torch.stack([module.step(x[:, t], cache)[0] for t in range(5)], 1)
    assert_close("steps", y_full, steps, 1e-6)


def test_errors_name_argument_and_shapes():
    x = torch.randn(2, 8, 60)
    w = torch.randn(60, 4)
    with pytest.raises(ValueError, match=r"x has shape \[8, 60\], expected 3-D"):
        causal_conv1d(x[0], w)
    with pytest.raises(ValueError, match=r"weight has shape \[50, 4\], expected \[60, W\]"):
        causal_conv1d(x, torch.randn(50, 4))
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 60, 3\], expected \[2, 60, 4\]"):
        causal_conv1d(x, w, initial_state=torch.randn(2, 60, 3))
    with pytest.raises(ValueError, match=r"bias has shape \[4\]"):
        causal_conv1d(x, w, bias=torch.randn(4))
    with pytest.raises(ValueError, match=r"residual has shape \[2, 8, 6\]"):
        causal_conv1d(x, w, residual=torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match="activation 'gelu'"):
        causal_conv1d(x, w, activation="gelu")
    with pytest.raises(ValueError, match="batch size must be 1"):
        causal_conv1d(x, w, cu_seqlens=torch.tensor([0, 8]))
    module = ShortConvolution(60, 4)
    with pytest.raises(ValueError, match=r"cache has shape \[2, 60, 3\], expected \[2, 60, 4\]"):
        module(x, cache=torch.zeros(2, 60, 3))
    with pytest.raises(ValueError, match=r"cache has shape \[3, 60, 4\], expected \[2, 60, 4\]"):
        module.step(x[:, 0], torch.zeros(3, 60, 4))
    with pytest.raises(ValueError, match=r"mask has shape \[2, 7\], expected \[2, 8\]"):
        module(x, mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match=r"x has shape \[2, 2, 60\], expected \[B, 1, D\]"):
        module.step(x[:, :2], torch.zeros(2, 60, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("varlen", [False, True])
def test_conv_gpu_real_size(dtype, varlen):
    if varlen:
        cu_seqlens = torch.tensor([0, 1, 3, 1000, 1003, 4096, 8192], dtype=torch.int32, device=DEVICE)
        inputs = make_inputs(1, 8192, 2048, 4, dtype, n=6)
    else:
        cu_seqlens = None
        inputs = make_inputs(8, 4096, 2048, 4, dtype)
    check_against_reference("triton", inputs, "silu", cu_seqlens=cu_seqlens)
