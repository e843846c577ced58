"""fla.modules.gated_norm: norm(x) * act(g), both backends vs a float64 reference."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules.gated_norm import (
    FusedLayerNormGated,
    FusedRMSNormGated,
    LayerNormGated,
    RMSNormGated,
    layer_norm_gated,
    rms_norm_gated,
)
from fla.modules.norm import fused_norm
from tests.fla.modules.test_norm import rand, reference_norm
from tests.harness import (
    BACKENDS,
    DEVICE,
    assert_close,
    assert_grads_close,
    saved_for_backward,
    to_reference,
    tol,
    using,
)


def reference_gated(kind, x, g, weight, bias, activation, residual=None, eps=1e-5):
    """float64 reference: ``(norm(x + residual) * weight + bias) * act(g)`` and ``h``."""
    y, h = reference_norm(kind, x, weight, bias, residual, eps)
    act = torch.sigmoid(g) if activation == "sigmoid" else F.silu(g)
    return y * act, h


def check_gated(backend, kind, x, g, weight, bias, activation, residual=None, prenorm=False, residual_in_fp32=False):
    ratio = tol(x.dtype)
    fn = rms_norm_gated if kind == "rms" else layer_norm_gated
    inputs = {"x": x, "g": g, "residual": residual, "weight": weight, "bias": bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        out = fn(x, g, weight, bias, activation, residual=residual, prenorm=prenorm, residual_in_fp32=residual_in_fp32)
    y_ref, h_ref = reference_gated(
        kind, refs["x"], refs["g"], refs["weight"], refs["bias"], activation, refs["residual"]
    )
    if prenorm:
        (y, h), ref_outs = out, (y_ref, h_ref)
        assert h.dtype == (torch.float32 if residual_in_fp32 else x.dtype)
        assert_close("h", h_ref, h, ratio)
        grad_out = (torch.randn_like(y_ref), torch.randn_like(h_ref))
        outs = (y, h)
    else:
        y, outs, ref_outs, grad_out = out, out, y_ref, torch.randn_like(y_ref)
    assert y.dtype == x.dtype
    assert_close("y", y_ref, y, ratio)
    assert_grads_close(inputs, refs, outs, ref_outs, grad_out, ratio)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("D", [60, 100])
@pytest.mark.parametrize("activation", ["swish", "silu", "sigmoid"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_gated_matches_reference(backend, activation, D, dtype):
    # [63, 2, D]: per-head gating as in the linear-attention layers
    x, g = rand(63, 2, D, dtype=dtype), rand(63, 2, D, dtype=dtype, scale=2.0)
    check_gated(backend, "rms", x, g, rand(D, dtype=dtype), None, activation)


@pytest.mark.parametrize("affine", ["none", "weight_bias", "bias"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_gated_affine_variants(backend, affine):
    x, g = rand(63, 60), rand(63, 60)
    weight = rand(60) if affine == "weight_bias" else None
    bias = rand(60) if affine != "none" else None
    check_gated(backend, "rms", x, g, weight, bias, "swish")


@pytest.mark.parametrize("residual_in_fp32", [False, True])
@pytest.mark.parametrize("prenorm", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_gated_with_residual(backend, prenorm, residual_in_fp32):
    dtype = torch.float16
    x, g, residual = rand(63, 100, dtype=dtype), rand(63, 100, dtype=dtype), rand(63, 100, dtype=dtype)
    check_gated(backend, "rms", x, g, rand(100, dtype=dtype), None, "sigmoid", residual, prenorm, residual_in_fp32)


@pytest.mark.parametrize("activation", ["swish", "sigmoid"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_gated_matches_reference(backend, activation):
    x, g = rand(63, 100, shift=0.5), rand(63, 100)
    check_gated(backend, "layer", x, g, rand(100), rand(100), activation, rand(63, 100), prenorm=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_gate_requires_grad(backend):
    # the backward must still produce dg when x / weight need no gradient
    x, g = rand(63, 60, requires_grad=False), rand(63, 60)
    check_gated(backend, "rms", x, g, rand(60, requires_grad=False), None, "swish")


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_match_functional(backend):
    rms = FusedRMSNormGated(60, eps=1e-6, activation="sigmoid").to(DEVICE)
    ln = FusedLayerNormGated(60, bias=True, eps=1e-6).to(DEVICE)
    assert list(rms.state_dict()) == ["weight"] and rms.bias is None
    assert list(ln.state_dict()) == ["weight", "bias"]
    assert list(FusedRMSNormGated(60, elementwise_affine=False).parameters()) == []
    assert "activation='sigmoid'" in repr(rms)
    x, g, residual = rand(2, 7, 60), rand(2, 7, 60), rand(2, 7, 60)
    for module, kind in ((rms, "rms"), (ln, "layer")):
        with torch.no_grad():
            for p in module.parameters():
                p.normal_()
        with using(backend):
            y, h = module(x, g, residual, prenorm=True, residual_in_fp32=True)
        w, b = to_reference(module.weight), to_reference(module.bias)
        ref = reference_gated(
            kind, to_reference(x), to_reference(g), w, b, module.activation, to_reference(residual), 1e-6
        )
        assert_close(f"{kind} y", ref[0], y, tol(torch.float32))
        assert_close(f"{kind} h", ref[1], h, tol(torch.float32))
        module.reset_parameters()
        assert torch.equal(module.weight, torch.ones(60, device=DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_name_argument_and_shapes(backend):
    x = rand(4, 60)
    with using(backend):
        with pytest.raises(ValueError, match=r"activation must be one of \['sigmoid', 'silu', 'swish'\], got 'gelu'"):
            rms_norm_gated(x, rand(4, 60), None, activation="gelu")
        with pytest.raises(ValueError, match=r"g has shape \[4, 30\] but x has shape \[4, 60\]"):
            rms_norm_gated(x, rand(4, 30), None)
        with pytest.raises(ValueError, match=r"weight has shape \[61\], expected \[60\]"):
            rms_norm_gated(x, rand(4, 60), rand(61))
        with pytest.raises(ValueError, match=r"residual has shape \[4\] but x has shape \[4, 60\]"):
            rms_norm_gated(x, rand(4, 60), None, residual=rand(4))
    with pytest.raises(ValueError, match="got 'relu'"):
        FusedRMSNormGated(60, activation="relu")


def reference_grouped(x, z, weight, group_size, norm_before_gate, eps=1e-5):
    """float64 Mamba2 gated RMSNorm: groups of ``group_size`` features, the SiLU gate before or after the norm."""
    h = x if z is None or norm_before_gate else x * F.silu(z)
    hg = h.unflatten(-1, (-1, group_size))
    y = (hg * torch.rsqrt(hg.square().mean(-1, keepdim=True) + eps)).flatten(-2) * weight
    return y * F.silu(z) if z is not None and norm_before_gate else y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype, group_size, norm_before_gate, gated",
    [
        (torch.float32, 36, False, True),
        (torch.float16, 36, False, True),
        (torch.float16, 36, True, True),
        (torch.float32, None, False, True),
        (torch.float32, 18, False, False),
    ],
)
def test_rms_norm_gated_grouped_matches_reference(backend, dtype, group_size, norm_before_gate, gated):
    # [2, 31, 108]: three groups of 36 (Mamba2's n_groups over the inner width), D not a power of two
    norm = RMSNormGated(108, group_size=group_size, norm_before_gate=norm_before_gate).to(DEVICE)
    with torch.no_grad():
        norm.weight.normal_()
    x, z = rand(2, 31, 108, dtype=dtype), rand(2, 31, 108, dtype=dtype, scale=2.0) if gated else None
    inputs = {"x": x, "z": z, "weight": norm.weight}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        y = norm(x, z)
    y_ref = reference_grouped(refs["x"], refs["z"], refs["weight"], group_size or 108, norm_before_gate)
    assert y.dtype == dtype
    assert_close("y", y_ref, y, tol(dtype, 2))
    assert_grads_close(inputs, refs, y, y_ref, torch.randn_like(y_ref), tol(dtype, 4))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "group_size, norm_before_gate, gated", [(36, True, True), (36, False, True), (None, True, False)]
)
def test_layer_norm_gated_grouped_matches_reference(backend, group_size, norm_before_gate, gated):
    """fla's LayerNormGated: (layernorm(x) * weight + bias) * silu(z), or layernorm(x * silu(z)) * weight + bias,
    per group of ``group_size`` features; weight and bias get gradients."""
    norm = LayerNormGated(108, group_size=group_size, norm_before_gate=norm_before_gate).to(DEVICE)
    assert norm.norm_before_gate is norm_before_gate and norm.bias is not None
    assert LayerNormGated(8).norm_before_gate and not RMSNormGated(8).norm_before_gate  # fla's defaults
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, z = rand(2, 31, 108), rand(2, 31, 108, scale=2.0) if gated else None
    inputs = {"x": x, "z": z, "weight": norm.weight, "bias": norm.bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        y = norm(x, z)
    G = group_size or 108
    h = refs["x"] if z is None or norm_before_gate else refs["x"] * F.silu(refs["z"])
    hg = h.unflatten(-1, (-1, G))
    hg = hg - hg.mean(-1, keepdim=True)
    y_ref = (hg * torch.rsqrt(hg.square().mean(-1, keepdim=True) + 1e-5)).flatten(-2) * refs["weight"] + refs["bias"]
    y_ref = y_ref * F.silu(refs["z"]) if z is not None and norm_before_gate else y_ref
    assert_close("y", y_ref, y, tol(x.dtype, 2))
    assert_grads_close(inputs, refs, y, y_ref, torch.randn_like(y_ref), tol(x.dtype, 4))


def test_fla_norm_module_path_names():
    """fla 0.6.0's ``from fla.modules.norm import <name>`` (its ``__all__``) gives our module, the same object as
    ``fla.modules``' where both have it; ``NormParallel``, its tensor-parallel style, is torch's SequenceParallel
    (checked on 2 ranks in tests/flame/dist/tp_full_norm.py)."""
    import fla.modules
    import fla.modules.norm as norm_module

    fla060 = ["FusedLayerNormGated", "FusedLayerNormGatedLinear", "FusedLayerNormSwishGate",
              "FusedLayerNormSwishGateLinear", "FusedRMSNormGated", "FusedRMSNormGatedLinear", "FusedRMSNormSwishGate",
              "FusedRMSNormSwishGateLinear", "GroupNorm", "GroupNormLinear", "L2Norm", "LayerNorm", "LayerNormGated",
              "LayerNormLinear", "RMSNorm", "RMSNormGated", "RMSNormLinear"]  # fmt: skip
    for name in fla060:
        obj = getattr(norm_module, name)
        assert isinstance(obj, type) and issubclass(obj, torch.nn.Module), name
        assert getattr(fla.modules, name, obj) is obj, name
    assert norm_module.LayerNormGated is LayerNormGated
    from torch.distributed.tensor.parallel import SequenceParallel

    style = norm_module.NormParallel(sequence_dim=0, use_local_output=True)
    assert isinstance(style, SequenceParallel) and style.use_local_output
    with pytest.raises(AttributeError, match="NoSuchNorm"):
        norm_module.NoSuchNorm  # noqa: B018


@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_first_layer_norm_with_bias_and_sigmoid(backend):
    """fused_norm(gate_first=True): norm(x * act(g)) * weight + bias, the LayerNorm kind, two groups."""
    x, g = rand(3, 17, 96), rand(3, 17, 96, scale=2.0)
    weight, bias = rand(96), rand(96)
    inputs = {"x": x, "g": g, "weight": weight, "bias": bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        y = fused_norm(x, weight, bias, num_groups=2, g=g, activation="sigmoid", gate_first=True)
    h = (refs["x"] * torch.sigmoid(refs["g"])).unflatten(-1, (2, 48))
    h = h - h.mean(-1, keepdim=True)
    y_ref = (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + 1e-5)).flatten(-2) * refs["weight"] + refs["bias"]
    assert_close("y", y_ref, y, tol(x.dtype))
    assert_grads_close(inputs, refs, y, y_ref, torch.randn_like(y_ref), tol(x.dtype, 2))
    with pytest.raises(ValueError, match="gate_first takes no residual"):
        fused_norm(x, weight, bias, residual=x, g=g, activation="swish", gate_first=True)


def test_gate_first_saves_its_inputs_not_the_fp32_product():
    """Mamba2's gate-first norm on the Triton path keeps x and g in their dtype for the backward, not the fp32
    x * act(g) (at 340M sizes that product cost 24 KiB per token and layer in float32)."""
    x, g = rand(4, 33, 64, dtype=torch.float16), rand(4, 33, 64, dtype=torch.float16, scale=2.0)
    norm = RMSNormGated(64, group_size=32, norm_before_gate=False).to(DEVICE)
    with using("triton"), saved_for_backward() as saved:
        norm(x, g)
    wide = [t for t in saved if t.shape[-1] == 64 and t.dim() > 1]
    assert [t.dtype for t in wide] == [torch.float16, torch.float16], [(t.shape, t.dtype) for t in saved]


def test_rms_norm_gated_grouped_errors():
    x = rand(4, 60)
    with pytest.raises(ValueError, match="group_size=7 must be a positive divisor of x's last dim D=60"):
        rms_norm_gated(x, rand(4, 60), None, group_size=7)
    with pytest.raises(ValueError, match="norm_before_gate=False takes no residual"):
        rms_norm_gated(x, rand(4, 60), None, residual=rand(4, 60), norm_before_gate=False)
    with pytest.raises(ValueError, match="group_size=7 must be a positive divisor of hidden_size=60"):
        RMSNormGated(60, group_size=7)
    norm = RMSNormGated(60, group_size=30)
    assert list(norm.state_dict()) == ["weight"] and "group_size=30, norm_before_gate=False" in repr(norm)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("activation", ["swish", "sigmoid"])
def test_gpu_rms_norm_gated_large(activation, dtype):
    # [B, T, H, V] = [4, 2048, 16, 128]: the per-head output gate of a linear-attention layer
    x, g = rand(4, 2048, 16, 128, dtype=dtype), rand(4, 2048, 16, 128, dtype=dtype)
    check_gated("triton", "rms", x, g, rand(128, dtype=dtype), None, activation)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_norm_gated_wide_with_residual(dtype):
    x, g, residual = rand(8192, 4096, dtype=dtype), rand(8192, 4096, dtype=dtype), rand(8192, 4096, dtype=dtype)
    check_gated(
        "triton", "layer", x, g, rand(4096, dtype=dtype), rand(4096, dtype=dtype), "swish", residual, True, True
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_rms_norm_gated_gate_first_mamba2_size(dtype):
    """Mamba2-340M's gated norm: 2048 features in one group, gate before the norm, 16k tokens."""
    norm = RMSNormGated(2048, norm_before_gate=False).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x, z = rand(8, 2048, 2048, dtype=dtype), rand(8, 2048, 2048, dtype=dtype, scale=2.0)
    inputs = {"x": x, "z": z, "weight": norm.weight}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    y_ref = reference_grouped(refs["x"], refs["z"], refs["weight"], 2048, False)
    with using("triton"):
        y = norm(x, z)
    assert_close("y", y_ref, y, tol(dtype, 2))
    assert_grads_close(inputs, refs, y, y_ref, torch.randn_like(y_ref), tol(dtype, 4))
