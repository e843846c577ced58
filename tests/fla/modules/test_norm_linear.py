"""fla 0.6.0's norm + linear modules, swish-gated norms and L2Norm against float64 references."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules import (
    FusedLayerNormSwishGate,
    FusedLayerNormSwishGateLinear,
    FusedRMSNormSwishGate,
    FusedRMSNormSwishGateLinear,
    GroupNormLinear,
    L2Norm,
    LayerNormLinear,
    RMSNormLinear,
)
from tests.harness import BACKENDS, DEVICE, assert_close, to_reference, tol, using

EPS = 1e-5
D, OUT = 24, 10  # D not a power of two


def _norm64(x, weight, bias, groups, rms):
    """float64 (group) norm over the last dim, then ``* weight + bias``."""
    h = x.unflatten(-1, (groups, -1))
    if not rms:
        h = h - h.mean(-1, keepdim=True)
    y = (h / (h.square().mean(-1, keepdim=True) + EPS).sqrt()).flatten(-2)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def _randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


def _case(name):
    """(module, reference(x, g, W, b, params) in float64, gated)."""
    cases = {
        "rms_linear": (RMSNormLinear(D, bias=True), lambda x, g, p: _norm64(x, p["weight"], p["bias"], 1, True), False),
        "ln_linear": (
            LayerNormLinear(D, bias=True),
            lambda x, g, p: _norm64(x, p["weight"], p["bias"], 1, False),
            False,
        ),
        "gn_linear": (
            GroupNormLinear(3, D, bias=True),
            lambda x, g, p: _norm64(x, p["weight"], p["bias"], 3, False),
            False,
        ),
        "gn_rms_linear": (
            GroupNormLinear(4, D, is_rms_norm=True),
            lambda x, g, p: _norm64(x, p["weight"], None, 4, True),
            False,
        ),
        "rms_gate_linear": (
            FusedRMSNormSwishGateLinear(D),
            lambda x, g, p: _norm64(x, p["weight"], None, 1, True) * F.silu(g),
            True,
        ),
        "ln_gate_linear": (
            FusedLayerNormSwishGateLinear(D),
            lambda x, g, p: _norm64(x, p["weight"], None, 1, False) * F.silu(g),
            True,
        ),
    }
    module, ref, gated = cases[name]
    return _randomize(module.to(DEVICE)), ref, gated


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["rms_linear", "ln_linear", "gn_linear", "gn_rms_linear", "rms_gate_linear", "ln_gate_linear"]
)
def test_norm_linear(name, backend):
    module, ref_fn, gated = _case(name)
    x = torch.randn(3, 7, D, device=DEVICE, requires_grad=True)
    g = torch.randn(3, 7, D, device=DEVICE, requires_grad=True) if gated else None
    W = torch.randn(OUT, D, device=DEVICE, requires_grad=True)
    b = torch.randn(OUT, device=DEVICE, requires_grad=True)
    params = dict(module.named_parameters())
    with using(backend):
        out = module(x, g, W, b) if gated else module(x, W, b)
    ref = {n: to_reference(t) for n, t in dict(x=x, g=g, W=W, b=b).items()}
    ref_params = {n: to_reference(p) for n, p in params.items()}
    want = F.linear(ref_fn(ref["x"], ref["g"], ref_params), ref["W"], ref["b"])
    assert out.shape == (3, 7, OUT)
    assert_close("out", want, out, tol(torch.float32, 10))
    dout = torch.randn_like(want)
    names = [n for n in ("x", "g", "W", "b") if ref[n] is not None]
    got = torch.autograd.grad(out, [dict(x=x, g=g, W=W, b=b)[n] for n in names] + list(params.values()), dout.float())
    exp = torch.autograd.grad(want, [ref[n] for n in names] + list(ref_params.values()), dout)
    for n, a, e in zip(names + [f"norm.{p}" for p in params], got, exp):
        assert_close(f"d{n}", e, a, tol(torch.float32, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_linear_prenorm_residual(backend):
    module = _randomize(RMSNormLinear(D).to(DEVICE))
    x, r = torch.randn(2, 5, D, device=DEVICE), torch.randn(2, 5, D, device=DEVICE)
    W = torch.randn(OUT, D, device=DEVICE)
    with using(backend):
        out, h = module(x, W, None, residual=r, prenorm=True, residual_in_fp32=True)
    x64, r64 = x.double(), r.double()
    want = F.linear(_norm64(x64 + r64, module.weight.double(), None, 1, True), W.double())
    assert_close("out", want, out, tol(torch.float32, 10))
    assert_close("h", x64 + r64, h, tol(torch.float32))
    assert h.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [FusedRMSNormSwishGate, FusedLayerNormSwishGate])
def test_swish_gates(cls, backend):
    module = _randomize(cls(D).to(DEVICE))
    assert module.activation == "swish" and [n for n, _ in module.named_parameters()] == ["weight"]
    x, g = torch.randn(4, D, device=DEVICE), torch.randn(4, D, device=DEVICE)
    with using(backend):
        y = module(x, g)
    want = _norm64(x.double(), module.weight.double(), None, 1, cls is FusedRMSNormSwishGate) * F.silu(g.double())
    assert_close("y", want, y, tol(torch.float32, 10))


def test_parameter_names_match_fla():
    assert [n for n, _ in LayerNormLinear(D, bias=True).named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in FusedLayerNormSwishGate(D, bias=True).named_parameters()] == ["weight", "bias"]
    assert list(FusedLayerNormSwishGateLinear(D).state_dict()) == ["weight"]
    assert list(GroupNormLinear(2, D, elementwise_affine=False).state_dict()) == []


def test_bad_inputs():
    x = torch.randn(2, D)
    with pytest.raises(ValueError, match=r"weight must be .*\[out_features, 24\].*\(10, 23\)"):
        RMSNormLinear(D)(x, torch.randn(OUT, D - 1), None)
    with pytest.raises(ValueError, match="weight must be"):
        FusedRMSNormSwishGateLinear(D)(x, x)
    with pytest.raises(ValueError, match=r"bias must be \[10\]"):
        LayerNormLinear(D)(x, torch.randn(OUT, D), torch.randn(OUT + 1))
    with pytest.raises(ValueError, match="hidden_size=24 must be divisible by num_groups=5"):
        GroupNormLinear(5, D)


@pytest.mark.parametrize("backend", BACKENDS)
def test_l2norm(backend):
    x = torch.randn(3, 5, 20, device=DEVICE, requires_grad=True)
    with using(backend):
        y = L2Norm()(x)
        y16 = L2Norm(eps=1e-3, output_dtype=torch.float16)(x.detach())
    x64 = to_reference(x)
    want = x64 / (x64.square().sum(-1, keepdim=True) + 1e-6).sqrt()
    assert_close("y", want, y, tol(torch.float32, 10))
    assert y16.dtype == torch.float16
    assert_close("y16", x64 / (x64.square().sum(-1, keepdim=True) + 1e-3).sqrt(), y16, tol(torch.float16))
    dy = torch.randn_like(want)
    (dx,) = torch.autograd.grad(y, x, dy.float())
    (dx64,) = torch.autograd.grad(want, x64, dy)
    assert_close("dx", dx64, dx, tol(torch.float32, 10))
