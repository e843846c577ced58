"""Feature maps (fla/modules/feature_map.py): shapes, maths against direct formulas in float64, gradients,
the kernel identities of the quadratic maps, and fla 0.6.0's parameter names."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fla.modules.feature_map import (
    DPFPFeatureMap,
    GELUFeatureMap,
    HadamardFeatureMap,
    HedgehogFeatureMap,
    LearnableOuterProductFeatureMap,
    LearnablePolySketchNonNegativeFeatureMap,
    RebasedFeatureMap,
    ReLUFeatureMap,
    SigmoidFeatureMap,
    SquaredReLUFeatureMap,
    SwishFeatureMap,
    T2RFeatureMap,
    TaylorFeatureMap,
    elu_p1,
    flatten_diag_outer_product,
    flatten_diag_outer_product_off1,
)
from tests.harness import assert_close, tol

D = 6
C = 0.044715  # of the tanh GELU
SHAPE = (2, 5, 3, D)  # [B, T, H, D]


def _x(*shape, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=dtype)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Random parameters (identity / ones / zeros inits would hide mistakes)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    return module.double()


def _triu(z: torch.Tensor, offset: int) -> torch.Tensor:
    """Upper triangle of ``z [..., N, N]``, row by row, by a Python loop."""
    n = z.shape[-1]
    return torch.stack([z[..., i, j] for i in range(n) for j in range(i + offset, n)], -1)


# name -> (module, feature dim, direct formula of the output)
def _cases():
    def hedgehog(m, x):
        y = x @ m.layer.weight.T + m.layer.bias
        return torch.exp(torch.cat([2 * y, -2 * y], -1)) / torch.exp(torch.cat([2 * y, -2 * y], -1)).sum(-1, True)

    def t2r(m, x):
        return torch.clamp(x @ m.layer.weight.T + m.layer.bias, min=0)

    def dpfp(m, x):
        r = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], -1)
        n = r.shape[-1]
        out = [r[..., i] * r[..., (i - j) % n] for j in range(1, 5) for i in range(n)]
        return torch.stack(out, -1)

    def hadamard(m, x):
        return (x @ m.layer1.weight.T + m.layer1.bias) * (x @ m.layer2.weight.T + m.layer2.bias)

    def outer(m, x):
        a, b = x @ m.layer1.weight.T, x @ m.layer2.weight.T
        return _triu(a[..., :, None] * b[..., None, :], 0)

    def sketch(m, x):
        x = F.layer_norm(x, (D,), m.gamma, m.beta, eps=1e-5)
        x = (x @ m.sketches1[0].weight.T) * (x @ m.sketches2[0].weight.T) / math.sqrt(D)
        return _triu(x[..., :, None] * x[..., None, :], 0)

    def taylor(m, x):
        z = x[..., :, None] * x[..., None, :]
        diag = torch.diagonal(z, dim1=-2, dim2=-1)
        one = torch.ones_like(x[..., :1])
        return torch.cat([one, x / D**0.25, diag / math.sqrt(2 * D), _triu(z, 1) / math.sqrt(D)], -1)

    def rebased(m, x):
        x = F.layer_norm(x, (D,), m.gamma, m.beta, eps=1e-5)
        z = x[..., :, None] * x[..., None, :]
        diag = torch.diagonal(z, dim1=-2, dim2=-1)
        return torch.cat([diag / math.sqrt(D), _triu(z, 1) * math.sqrt(2 / D)], -1)

    return {
        "hedgehog": (HedgehogFeatureMap(D), 2 * D, hedgehog),
        "t2r": (T2RFeatureMap(D, dot_dim=5, bias=True), 5, t2r),
        "dpfp": (DPFPFeatureMap(D), 8 * D, dpfp),
        "hadamard": (HadamardFeatureMap(D), D, hadamard),
        "outer_product": (LearnableOuterProductFeatureMap(D, feature_dim=4), 10, outer),
        "polysketch": (LearnablePolySketchNonNegativeFeatureMap(D, sketch_size=5), 15, sketch),
        "taylor": (TaylorFeatureMap(D), 1 + D + D * (D + 1) // 2, taylor),
        "rebased": (RebasedFeatureMap(D), D * (D + 1) // 2, rebased),
        "relu": (ReLUFeatureMap(), D, lambda m, x: x.clamp(min=0)),
        "sqrelu": (SquaredReLUFeatureMap(), D, lambda m, x: x.clamp(min=0) ** 2),
        "gelu": (GELUFeatureMap(), D, lambda m, x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + C * x**3)))),
        "swish": (SwishFeatureMap(), D, lambda m, x: x / (1 + torch.exp(-x))),
        "sigmoid": (SigmoidFeatureMap(), D, lambda m, x: 1 / (1 + torch.exp(-x))),
    }


CASES = list(_cases())


@pytest.mark.parametrize("name", CASES)
def test_feature_map_matches_formula_and_shape(name):
    module, dim, formula = _cases()[name]
    module = _randomize(module)
    x = _x(*SHAPE)
    y = module(x)
    assert y.shape == (*SHAPE[:-1], dim)
    assert_close(name, formula(module, x), y, 1e-12)


@pytest.mark.parametrize("name", CASES)
def test_feature_map_gradients(name):
    """Gradients w.r.t. the input and every parameter, against finite differences (float64)."""
    module, _, _ = _cases()[name]
    module = _randomize(module)
    x = _x(2, 3, D).requires_grad_()
    # parameters through torch.func.functional_call, so gradcheck sees them as inputs
    names, params = zip(*module.named_parameters()) if list(module.parameters()) else ((), ())

    def functional(x, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (x,))

    inputs = (x, *[p.detach().clone().requires_grad_() for p in params])
    assert torch.autograd.gradcheck(functional, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", ["hedgehog", "dpfp", "taylor", "rebased", "hadamard"])
def test_feature_map_low_precision_against_float64(name, dtype):
    module, _, _ = _cases()[name]
    module = _randomize(module)
    x = _x(*SHAPE)
    ref = module(x)
    out = module.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    assert_close(name, ref, out, tol(dtype, 10))


def test_quadratic_maps_are_polynomial_kernels():
    """Taylor: phi(q).phi(k) = 1 + s + s^2 / 2 with s = q.k / sqrt(d); ReBased (no norm): (q.k)^2 / d."""
    q, k = _x(7, D, seed=1), _x(7, D, seed=2)
    s = (q * k).sum(-1) / math.sqrt(D)
    taylor = TaylorFeatureMap(D)
    assert_close("taylor", 1 + s + s**2 / 2, (taylor(q) * taylor(k)).sum(-1), 1e-12)
    rebased = RebasedFeatureMap(D, use_beta=False, normalize=False).double()
    assert_close("rebased", (q * k).sum(-1) ** 2 / D, (rebased(q) * rebased(k)).sum(-1), 1e-12)


def test_positive_maps_are_positive():
    x = _x(*SHAPE) * 5
    assert (HedgehogFeatureMap(D).double()(x) > 0).all()
    phi = TaylorFeatureMap(D)(x)  # features of both signs, but a positive kernel (1 + s + s^2 / 2 >= 1 / 2)
    assert ((phi[:, :, :, None] * phi[:, :, None]).sum(-1) >= 0.5 - 1e-9).all()
    assert (elu_p1(x) > 0).all() and (DPFPFeatureMap(D)(x) >= 0).all()
    assert_close("elu_p1", F.elu(x) + 1, elu_p1(x), 1e-12)
    x.requires_grad_()
    assert torch.autograd.gradcheck(elu_p1, (x,))


def test_outer_product_helpers():
    x, y = _x(3, 4, seed=1), _x(3, 4, seed=2)
    z = x[..., :, None] * y[..., None, :]
    assert torch.equal(flatten_diag_outer_product(x, y), _triu(z, 0))
    off, diag = flatten_diag_outer_product_off1(x, y)
    assert torch.equal(off, _triu(z, 1)) and torch.equal(diag, x * y)


def test_parameter_names_are_fla060s():
    names = lambda m: sorted(n for n, _ in m.named_parameters())  # noqa: E731
    assert names(HedgehogFeatureMap(4)) == ["layer.bias", "layer.weight"]
    assert names(T2RFeatureMap(4)) == ["layer.weight"]
    assert names(HadamardFeatureMap(4)) == ["layer1.bias", "layer1.weight", "layer2.bias", "layer2.weight"]
    assert names(LearnableOuterProductFeatureMap(4, 3)) == ["layer1.weight", "layer2.weight"]
    assert names(LearnablePolySketchNonNegativeFeatureMap(4, degree=8)) == [
        "beta", "gamma", "sketches1.0.weight", "sketches1.1.weight", "sketches2.0.weight", "sketches2.1.weight",
    ]  # fmt: skip
    assert names(RebasedFeatureMap(4)) == ["beta", "gamma"] and names(RebasedFeatureMap(4, use_beta=False)) == ["gamma"]
    assert names(DPFPFeatureMap(4)) == names(TaylorFeatureMap(4)) == []
    # hedgehog starts as the identity map
    m = HedgehogFeatureMap(4)
    assert torch.equal(m.layer.weight, torch.eye(4)) and torch.equal(m.layer.bias, torch.zeros(4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="degree=3 must be a power of 2"):
        LearnablePolySketchNonNegativeFeatureMap(4, degree=3)
    with pytest.raises(ValueError, match="use_gamma=False"):
        RebasedFeatureMap(4, use_gamma=False, normalize=False)


def test_polysketch_degree_8_uses_its_second_sketch():
    m = _randomize(LearnablePolySketchNonNegativeFeatureMap(D, sketch_size=4, degree=8))
    x = _x(*SHAPE)
    y = F.layer_norm(x, (D,), m.gamma, m.beta, eps=1e-5)
    for i in range(2):
        y = (y @ m.sketches1[i].weight.T) * (y @ m.sketches2[i].weight.T) / math.sqrt(D)
    assert_close("degree 8", _triu(y[..., :, None] * y[..., None, :], 0), m(x), 1e-12)
