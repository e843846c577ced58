"""fla.modules.norm: RMS / Layer / Group norm with fused residual, both backends vs a float64 reference.

The reference is built from ``torch.nn.functional`` (``layer_norm`` / ``rms_norm`` / ``group_norm``)
in float64, independent of the code under test.
"""

import pytest
import torch
import torch.nn.functional as F

from fla.modules.norm import GroupNorm, LayerNorm, RMSNorm, group_norm, layer_norm, rms_norm
from fla.modules.norm_kernels import MAX_GROUP_WIDTH
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using

KINDS = ("rms", "layer", "group", "group_rms")
GROUPS = 4  # D = 60 and 100 both split into 4 groups


def reference_norm(kind, x, weight, bias, residual=None, eps=1e-5, num_groups=GROUPS):
    """float64 reference: returns ``(y, h)`` with ``h = x + residual``."""
    h = x if residual is None else x + residual
    D = h.shape[-1]
    if kind == "rms":
        y = F.rms_norm(h, (D,), None, eps)
    elif kind == "layer":
        y = F.layer_norm(h, (D,), None, None, eps)
    elif kind == "group":
        y = F.group_norm(h.reshape(-1, D), num_groups, None, None, eps).reshape(h.shape)
    else:  # group_rms
        y = F.rms_norm(h.unflatten(-1, (num_groups, D // num_groups)), (D // num_groups,), None, eps).flatten(-2)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, h


def call_norm(kind, x, weight, bias, **kwargs):
    """The function under test for ``kind``."""
    if kind == "rms":
        return rms_norm(x, weight, bias, **kwargs)
    if kind == "layer":
        return layer_norm(x, weight, bias, **kwargs)
    return group_norm(x, weight, bias, GROUPS, is_rms_norm=kind == "group_rms", **kwargs)


def rand(*shape, dtype=torch.float32, device=DEVICE, requires_grad=True, scale=1.0, shift=0.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32) * scale + shift
    return t.to(dtype).requires_grad_(requires_grad)


def check_norm(backend, kind, x, weight, bias, residual=None, prenorm=False, residual_in_fp32=False, ratio=None):
    """Run our norm and the reference; compare y (and h), then every gradient."""
    ratio = ratio or tol(x.dtype)
    inputs = {"x": x, "residual": residual, "weight": weight, "bias": bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        out = call_norm(kind, x, weight, bias, residual=residual, prenorm=prenorm, residual_in_fp32=residual_in_fp32)
    y_ref, h_ref = reference_norm(kind, refs["x"], refs["weight"], refs["bias"], refs["residual"])
    if prenorm:
        y, h = out
        h_dtype = torch.float32 if residual_in_fp32 else x.dtype
        assert h.dtype == h_dtype, f"h has dtype {h.dtype}, expected {h_dtype}"
        assert_close("h", h_ref, h, ratio)
        outs, ref_outs = (y, h), (y_ref, h_ref)
        grad_out = (torch.randn_like(y_ref), torch.randn_like(h_ref))
    else:
        y = out
        outs, ref_outs, grad_out = y, y_ref, torch.randn_like(y_ref)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close("y", y_ref, y, ratio)
    assert_grads_close(inputs, refs, outs, ref_outs, grad_out, ratio)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("D", [60, 100])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_matches_reference(backend, kind, D, dtype):
    # [3, 21, D]: 63 rows behind a leading batch dim; a non-zero mean makes LayerNorm differ from RMSNorm
    x = rand(3, 21, D, dtype=dtype, scale=2.0, shift=0.5)
    weight, bias = rand(D, dtype=dtype), rand(D, dtype=dtype)
    check_norm(backend, kind, x, weight, bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("residual_in_fp32", [False, True])
@pytest.mark.parametrize("prenorm", [False, True])
@pytest.mark.parametrize("kind", ("rms", "layer", "group"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_with_residual(backend, kind, prenorm, residual_in_fp32, dtype):
    x, residual = rand(63, 100, dtype=dtype), rand(63, 100, dtype=dtype, shift=0.3)
    weight, bias = rand(100, dtype=dtype), rand(100, dtype=dtype)
    check_norm(backend, kind, x, weight, bias, residual, prenorm=prenorm, residual_in_fp32=residual_in_fp32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_stream_in_fp32_with_half_input(backend):
    # the common layer-to-layer case: fp16 activations, fp32 residual stream from the previous prenorm
    x, residual = rand(63, 60, dtype=torch.float16), rand(63, 60, dtype=torch.float32)
    weight = rand(60, dtype=torch.float32)
    check_norm(backend, "rms", x, weight, None, residual, prenorm=True, residual_in_fp32=True)
    with using(backend):
        y, h = rms_norm(x, weight, None, residual, prenorm=True, residual_in_fp32=True)
    (dr,) = torch.autograd.grad((y, h), residual, (torch.randn_like(y), torch.randn_like(h)))
    assert dr.dtype == torch.float32 and y.dtype == torch.float16


@pytest.mark.parametrize("affine", ["none", "weight", "bias"])
@pytest.mark.parametrize("kind", ("rms", "layer", "group"))
@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_without_affine(backend, kind, affine):
    x = rand(63, 60, shift=0.5)
    weight = rand(60) if affine == "weight" else None
    bias = rand(60) if affine == "bias" else None
    check_norm(backend, kind, x, weight, bias)


@pytest.mark.parametrize("residual_in_fp32", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_prenorm_without_residual_returns_input_stream(backend, residual_in_fp32):
    x = rand(63, 100, dtype=torch.float16)
    check_norm(backend, "layer", x, rand(100, dtype=torch.float16), None, prenorm=True,
               residual_in_fp32=residual_in_fp32)  # fmt: skip
    with using(backend):
        _, h = layer_norm(x, None, None, prenorm=True, residual_in_fp32=residual_in_fp32)
    assert torch.equal(h.detach(), x.detach().to(h.dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_rows_one_row_per_tile(backend):
    # D = 5000: a 8192-wide tile, one row per program and an empty trailing tile in the backward
    x, residual = rand(5, 5000, shift=1.0), rand(5, 5000)
    check_norm(backend, "layer", x, rand(5000), rand(5000), residual, prenorm=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_row_and_empty_input(backend):
    check_norm(backend, "rms", rand(1, 60), rand(60), rand(60))
    x, weight = rand(0, 60), rand(60)
    with using(backend):
        y = rms_norm(x, weight, None)
    assert y.shape == (0, 60)
    (dw,) = torch.autograd.grad(y, weight, torch.ones_like(y))
    assert torch.equal(dw, torch.zeros_like(weight))


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_and_mixed_dtype_inputs(backend):
    base = rand(100, 63, dtype=torch.float16, requires_grad=False)
    x = base.t().requires_grad_(True)  # [63, 100], column-major
    residual = rand(63, 200, dtype=torch.float16)[:, ::2]
    weight, bias = rand(100, dtype=torch.float32), rand(100, dtype=torch.float32)  # fp32 params, fp16 input
    check_norm(backend, "layer", x, weight, bias, residual)
    with using(backend):
        y = layer_norm(x, weight, bias)
    dw, db = torch.autograd.grad(y, (weight, bias), torch.randn_like(y))
    assert y.dtype == torch.float16 and dw.dtype == db.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_is_used(backend):
    x = rand(63, 60, scale=1e-3)  # tiny inputs: eps dominates the variance
    with using(backend):
        y = rms_norm(x, None, None, eps=1.0)
    y_ref, _ = reference_norm("rms", to_reference(x), None, None, eps=1.0)
    assert_close("y", y_ref, y, tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_name_argument_and_shapes(backend):
    x = rand(4, 60)
    with using(backend):
        with pytest.raises(ValueError, match=r"weight has shape \[50\], expected \[60\]"):
            rms_norm(x, rand(50), None)
        with pytest.raises(ValueError, match=r"bias has shape \[60, 1\], expected \[60\]"):
            layer_norm(x, rand(60), rand(60, 1))
        with pytest.raises(ValueError, match=r"residual has shape \[4, 61\] but x has shape \[4, 60\]"):
            rms_norm(x, None, None, residual=rand(4, 61))
        with pytest.raises(ValueError, match=r"x has shape \[4, 60\]: D=60 is not divisible by num_groups=7"):
            group_norm(x, None, None, 7)
        with pytest.raises(ValueError, match="num_groups must be a positive int"):
            group_norm(x, None, None, 0)
        with pytest.raises(TypeError, match="x has dtype torch.int64"):
            rms_norm(torch.ones(4, 60, dtype=torch.long), None, None)
    with pytest.raises(ValueError, match="hidden_size=60 is not divisible by num_groups=7"):
        GroupNorm(7, 60)


def test_triton_rejects_groups_wider_than_the_kernel_limit():
    x = torch.randn(1, MAX_GROUP_WIDTH * 2, device=DEVICE)
    with using("triton"):
        with pytest.raises(ValueError, match=rf"groups of {MAX_GROUP_WIDTH * 2} features exceed"):
            rms_norm(x, None, None)
        group_norm(x[:, :8], None, None, 2)  # small groups stay fine


def test_modules_parameters_and_state_dict():
    rms, ln, gn = RMSNorm(60), LayerNorm(60), GroupNorm(4, 60, bias=True, is_rms_norm=True)
    assert list(rms.state_dict()) == ["weight"] and rms.bias is None
    assert list(ln.state_dict()) == ["weight", "bias"]
    assert list(gn.state_dict()) == ["weight", "bias"] and gn.num_groups == 4 and gn.is_rms_norm
    assert list(RMSNorm(60, elementwise_affine=False).parameters()) == []
    assert list(LayerNorm(60, elementwise_affine=False).state_dict()) == []
    for m in (rms, ln, gn):
        with torch.no_grad():
            for p in m.parameters():
                p.normal_()
        m.reset_parameters()
        assert torch.equal(m.weight, torch.ones(60))
        if m.bias is not None:
            assert torch.equal(m.bias, torch.zeros(60))
    # a checkpoint written by fla (parameter names weight / bias) loads strictly
    ln.load_state_dict({"weight": torch.full((60,), 2.0), "bias": torch.full((60,), 3.0)})
    assert "60, eps=1e-05, bias=True" in repr(ln) and "4, 60" in repr(gn) and "is_rms_norm=True" in repr(gn)
    meta = RMSNorm(60, device="meta", dtype=torch.bfloat16)
    assert meta.weight.device.type == "meta" and meta.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_forward_match_functional(backend):
    x, residual = rand(2, 5, 60), rand(2, 5, 60)
    cases = [
        (RMSNorm(60, eps=1e-6), "rms"),
        (LayerNorm(60, eps=1e-6), "layer"),
        (GroupNorm(GROUPS, 60, bias=True, eps=1e-6), "group"),
        (GroupNorm(GROUPS, 60, eps=1e-6, is_rms_norm=True), "group_rms"),
    ]
    for module, kind in cases:
        module.to(DEVICE)
        with torch.no_grad():
            for p in module.parameters():
                p.normal_()
        with using(backend):
            y, h = module(x, residual, prenorm=True, residual_in_fp32=True)
        w, b = to_reference(module.weight), to_reference(module.bias)
        y_ref, h_ref = reference_norm(kind, to_reference(x), w, b, to_reference(residual), eps=1e-6)
        assert_close(f"{kind} y", y_ref, y, tol(torch.float32))
        assert_close(f"{kind} h", h_ref, h, tol(torch.float32))
        assert h.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_norm_large(kind, dtype):
    x, weight, bias = rand(8192, 4096, dtype=dtype, shift=0.5), rand(4096, dtype=dtype), rand(4096, dtype=dtype)
    check_norm("triton", kind, x, weight, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("residual_in_fp32", [False, True])
@pytest.mark.parametrize("kind", ("rms", "layer"))
def test_gpu_norm_large_residual_prenorm(kind, residual_in_fp32, dtype):
    x, residual = rand(4, 2048, 4096, dtype=dtype), rand(4, 2048, 4096, dtype=dtype)
    weight = rand(4096, dtype=dtype)
    check_norm("triton", kind, x, weight, None, residual, prenorm=True, residual_in_fp32=residual_in_fp32)


@pytest.mark.gpu
@pytest.mark.parametrize("D", [60, 100, 2048, 5000, 8192])
def test_gpu_norm_odd_and_wide_widths(D):
    x, residual = rand(1000, D, dtype=torch.bfloat16), rand(1000, D, dtype=torch.float32)
    weight, bias = rand(D, dtype=torch.float32), rand(D, dtype=torch.float32)
    check_norm("triton", "layer", x, weight, bias, residual, prenorm=True, residual_in_fp32=True)
