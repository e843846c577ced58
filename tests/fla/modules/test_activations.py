"""fla 0.6.0's activations (fla.modules.activations) against float64 references written from the maths."""

import math

import pytest
import torch
import torch.nn.functional as F

from fla.modules.activations import (
    ACT2FN,
    bias_gelu_impl,
    elu_p1,
    fast_gelu_impl,
    logsigmoid,
    powglu,
    powglu_linear,
    sigmoid,
    sigmoidglu,
    sigmoidglu_linear,
    sqrelu,
    swish,
)
from tests.harness import DEVICE, assert_close, assert_grads_close, saved_for_backward, to_reference, tol

DTYPES = [torch.float32, torch.bfloat16]
SHAPES = [(3, 17, 5), (1,)]


# ---- float64 references, from the definitions ----


def ref_sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def ref_logsigmoid(x, temperature=1.0):
    return -torch.log1p(torch.exp(-x)) / temperature


def ref_swish(x):
    return x * ref_sigmoid(x)


def ref_elu_p1(x):
    return torch.where(x >= 0, x + 1, torch.exp(x.clamp_max(0)))


def ref_sqrelu(x):
    return torch.where(x > 0, x, torch.zeros_like(x)) ** 2


def ref_gelu(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def ref_sigmoidglu(x, y):
    return ref_sigmoid(x) * y


def ref_powglu(x, y, power=3.0):
    pos = x > 0
    xp = torch.where(pos, x, torch.ones_like(x))  # keeps the unused lane's pow (and its gradient) finite
    gate = torch.where(pos, xp ** (power / (xp.sqrt() + 1)) * ref_sigmoid(x), x * ref_sigmoid(x))
    return gate * y


def make(*shape, dtype=torch.float32, scale=3.0):
    """Random leaf, wide enough to reach both tails of the sigmoid and both branches of the piecewise ones."""
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype).requires_grad_()


def check(fn, ref_fn, inputs: dict, kwargs: dict, dtype):
    """Forward value, output dtype and every input gradient of ``fn`` against ``ref_fn`` in float64."""
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with saved_for_backward() as saved:
        out = fn(*inputs.values(), **kwargs)
    ref = ref_fn(*refs.values(), **kwargs)
    assert out.dtype == dtype
    # only the inputs are kept for the backward: it recomputes, no activation is saved
    assert {t.data_ptr() for t in saved} <= {t.data_ptr() for t in inputs.values()}
    assert_close("out", ref, out, tol(dtype))
    assert_grads_close(inputs, refs, out, ref, torch.randn_like(ref), tol(dtype))


UNARY = {
    "sigmoid": (sigmoid, ref_sigmoid, {}),
    "logsigmoid": (logsigmoid, ref_logsigmoid, {}),
    "logsigmoid_t": (logsigmoid, ref_logsigmoid, {"temperature": 2.5}),
    "swish": (swish, ref_swish, {}),
    "elu_p1": (elu_p1, ref_elu_p1, {}),
    "sqrelu": (sqrelu, ref_sqrelu, {}),
    "fast_gelu_impl": (fast_gelu_impl, ref_gelu, {}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", UNARY)
def test_unary_matches_reference(name, shape, dtype):
    fn, ref_fn, kwargs = UNARY[name]
    check(fn, ref_fn, {"x": make(*shape, dtype=dtype)}, kwargs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gelu_matches_reference(dtype):
    inputs = {"input": make(3, 17, 5, dtype=dtype), "bias": make(5, dtype=dtype)}
    check(bias_gelu_impl, lambda x, b: ref_gelu(x + b), inputs, {}, dtype)


GLU = {
    "sigmoidglu": (sigmoidglu, ref_sigmoidglu, {}),
    "powglu": (powglu, ref_powglu, {}),
    "powglu_p1.5": (powglu, ref_powglu, {"power": 1.5}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", GLU)
def test_glu_matches_reference(name, shape, dtype):
    fn, ref_fn, kwargs = GLU[name]
    check(fn, ref_fn, {"x": make(*shape, dtype=dtype), "y": make(*shape, dtype=dtype)}, kwargs, dtype)


GLU_LINEAR = {
    "sigmoidglu_linear": (sigmoidglu_linear, ref_sigmoidglu, {}),
    "powglu_linear": (powglu_linear, ref_powglu, {}),
    "powglu_linear_p2": (powglu_linear, ref_powglu, {"power": 2.0}),
}


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", GLU_LINEAR)
def test_glu_linear_matches_reference(name, dtype, with_bias):
    fn, ref_act, kwargs = GLU_LINEAR[name]
    x, y = make(2, 9, 21, dtype=dtype), make(2, 9, 21, dtype=dtype)
    weight = make(11, 21, dtype=dtype, scale=0.3)
    bias = make(11, dtype=dtype) if with_bias else None
    inputs = {"x": x, "y": y, "weight": weight, "bias": bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with saved_for_backward() as saved:
        out = fn(x, y, weight, bias, **kwargs)
    ref = F.linear(ref_act(refs["x"], refs["y"], **kwargs), refs["weight"], refs["bias"])
    # the [..., I] activation is recomputed in the backward, not kept
    assert {t.data_ptr() for t in saved} <= {x.data_ptr(), y.data_ptr(), weight.data_ptr()}
    assert out.dtype == dtype
    assert_close("out", ref, out, tol(dtype, 2))
    assert_grads_close(inputs, refs, out, ref, torch.randn_like(ref), tol(dtype, 2))


def test_glu_linear_fla_positional_call_and_autocast():
    """fla 0.6.0 calls ``powglu_linear(x, y, weight, bias, power)`` positionally; under autocast the matmul runs
    in bfloat16 and the float32 parameters get float32 gradients."""
    x, y = make(4, 8), make(4, 8)
    weight, bias = make(6, 8, scale=0.3), make(6)
    refs = [to_reference(t) for t in (x, y, weight, bias)]
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        out = powglu_linear(x, y, weight, bias, 2.0)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert weight.grad.dtype == torch.float32 and bias.grad.dtype == torch.float32
    ref = F.linear(ref_powglu(refs[0], refs[1], 2.0), refs[2], refs[3])
    assert_close("out", ref, out, tol(torch.bfloat16, 2))
    ref.sum().backward()
    for name, t, r in zip(("x", "y", "weight", "bias"), (x, y, weight, bias), refs):
        assert_close(f"d{name}", r.grad, t.grad, tol(torch.bfloat16, 2))


# fla 0.6.0's ACT2FN keys (fla/modules/activations/ops.py)
FLA_ACT2FN_KEYS = {"relu", "sigmoid", "logsigmoid", "silu", "swish", "sqrelu", "gelu", "bias_gelu"}
ACT2FN_REFS = {
    "relu": lambda x: x.clamp_min(0),
    "sigmoid": ref_sigmoid,
    "logsigmoid": ref_logsigmoid,
    "silu": ref_swish,
    "swish": ref_swish,
    "sqrelu": ref_sqrelu,
    "gelu": ref_gelu,
}


def test_act2fn_has_fla_keys_and_reference_results():
    assert set(ACT2FN) == FLA_ACT2FN_KEYS
    x = make(5, 7)
    for key, ref_fn in ACT2FN_REFS.items():
        assert_close(key, ref_fn(to_reference(x)), ACT2FN[key](x), tol(torch.float32))
    b = make(7)
    assert_close("bias_gelu", ref_gelu(to_reference(x) + to_reference(b)), ACT2FN["bias_gelu"](x, b), 1e-5)


def test_bad_inputs_name_the_argument():
    a, b, ints = torch.randn(3, 4), torch.randn(3, 5), torch.ones(3, 4, dtype=torch.long)
    for fn in (sigmoid, logsigmoid, swish, elu_p1):
        with pytest.raises(TypeError, match="x has dtype torch.int64"):
            fn(ints)
    for fn in (sqrelu, fast_gelu_impl):
        with pytest.raises(TypeError, match="input has dtype torch.int64"):
            fn(ints)
    for fn in (sigmoidglu, powglu):
        with pytest.raises(ValueError, match=r"x has shape \[3, 4\] but y has shape \[3, 5\]"):
            fn(a, b)
        with pytest.raises(TypeError, match="y has dtype torch.float16"):
            fn(a, a.half())
    for fn in (sigmoidglu_linear, powglu_linear):
        with pytest.raises(ValueError, match=r"x has shape \[3, 4\] but y has shape \[3, 5\]"):
            fn(a, b, torch.randn(6, 4))
        with pytest.raises(ValueError, match=r"weight has shape \[6, 5\], expected \[\*, 4\]"):
            fn(a, a, torch.randn(6, 5))
        with pytest.raises(ValueError, match=r"bias has shape \[5\], expected \[6\]"):
            fn(a, a, torch.randn(6, 4), torch.randn(5))
    with pytest.raises(ValueError, match=r"bias has shape \[5\], expected \[4\]"):
        bias_gelu_impl(a, torch.randn(5))
    with pytest.raises(TypeError, match="bias has dtype torch.int64"):
        bias_gelu_impl(a, torch.ones(4, dtype=torch.long))
