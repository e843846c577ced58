"""fla.modules.long_conv (fla 0.6.0's LongConvolution / ImplicitLongConvolution) against direct sums in float64."""

import math

import pytest
import torch

from fla.modules import ImplicitLongConvolution, LongConvolution
from fla.modules.long_conv import fft_long_conv
from tests.harness import assert_close, tol


def direct(x, k):
    """``y_t = x_t + sum_{s < T} x_s k_{(t - s) mod 2T}`` (taps past ``len(k)`` or ``2T`` are 0), float64."""
    B, D, T = x.shape
    taps = torch.zeros(D, 2 * T, dtype=torch.float64)
    n = min(k.shape[-1], 2 * T)
    taps[:, :n] = k[:, :n].double()
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    M = taps[:, (t - s) % (2 * T)]  # [D, T(t), T(s)]
    return x.double() + torch.einsum("dts,bds->bdt", M, x.double())


@pytest.mark.parametrize("L", [5, 23, 40, 100])  # shorter than T, = T, between T and 2T (fla's wrap), past 2T
def test_fft_long_conv_matches_direct_sum(L):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 23, requires_grad=True)
    k = torch.randn(3, L, requires_grad=True)
    y = fft_long_conv(x, k)
    x64, k64 = x.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    ref = direct(x64, k64)
    assert_close("y", ref, y, tol(torch.float32, 4))
    g = torch.randn_like(ref)
    y.backward(g.float())
    ref.backward(g)
    assert_close("dx", x64.grad, x.grad, tol(torch.float32, 4))
    assert_close("dk", k64.grad, k.grad, tol(torch.float32, 4))


def test_causal_when_the_filter_is_no_longer_than_the_sequence():
    torch.manual_seed(1)
    x, k = torch.randn(1, 2, 16, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    y = fft_long_conv(x, k)
    ref = x.clone()
    for t in range(16):
        for s in range(t + 1):
            ref[..., t] += x[..., s] * k[:, t - s]
    assert_close("y", ref, y, 1e-12)
    x2 = x.clone()
    x2[..., 9:] = torch.randn(1, 2, 7, dtype=torch.float64)  # the future does not reach the past
    assert torch.allclose(fft_long_conv(x2, k)[..., :9], y[..., :9])


def test_modules_parameters_shapes_and_outputs():
    torch.manual_seed(2)
    conv = LongConvolution(6, max_len=20)
    assert [n for n, _ in conv.named_parameters()] == ["filter"] and conv.filter.shape == (6, 20)
    x = torch.randn(2, 11, 6, dtype=torch.bfloat16)
    y = conv(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    ref = direct(x.float().transpose(1, 2), conv.filter.detach()).transpose(1, 2)
    assert_close("y", ref, y, tol(torch.bfloat16, 4))

    imp = ImplicitLongConvolution(6, max_len=20, d_emb=5, d_hidden=8)
    names = {n: tuple(p.shape) for n, p in imp.named_parameters()}
    assert names == {"pos_emb.z": (1, 20, 5), "mlp.0.weight": (8, 5), "mlp.0.bias": (8,), "mlp.2.weight": (6, 8),
                     "mlp.2.bias": (6,)}  # fmt: skip
    assert not imp.pos_emb.z.requires_grad
    z = imp.pos_emb.z[0].double()  # time in [0, 1], then cos / -sin of 2 bands at w_j = 2 pi j / 20
    j = torch.arange(20, dtype=torch.float64)
    f = torch.tensor([1e-4, 1.0], dtype=torch.float64)
    assert_close("t", torch.linspace(0, 1, 20, dtype=torch.float64), z[:, 0], 1e-6)
    assert_close("cos", torch.cos(f * 2 * math.pi * j[:, None] / 20), z[:, 1:3], 1e-6)
    assert_close("sin", -torch.sin(f * 2 * math.pi * j[:, None] / 20), z[:, 3:5], 1e-6)
    x = torch.randn(2, 11, 6, requires_grad=True)
    y = imp(x)
    k = imp.mlp(imp.pos_emb.z[:, :11])[0].T.detach()  # [6, 11]
    assert_close("y", direct(x.detach().transpose(1, 2), k).transpose(1, 2), y, tol(torch.float32, 4))
    y.sum().backward()
    assert imp.mlp[0].weight.grad is not None and x.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match="d_emb"):
        ImplicitLongConvolution(4, 8, d_emb=4)
    with pytest.raises(ValueError, match=r"expected \[batch, seq_len, 4\]"):
        LongConvolution(4, 8)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="max_len=8"):
        ImplicitLongConvolution(4, 8)(torch.randn(1, 9, 4))
