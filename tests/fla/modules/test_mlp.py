"""swiglu, swiglu_linear and GatedMLP against float64 references."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules import GatedMLP, swiglu, swiglu_linear
from fla.modules.mlp import default_intermediate_size
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using


def ref_swiglu(gate, up):
    return F.silu(gate.double()) * up.double()


def make(*shape, dtype=torch.float32, scale=3.0, device=DEVICE):
    """Random leaf with large enough values to reach both tails of the sigmoid."""
    return (torch.randn(*shape, device=device) * scale).to(dtype).requires_grad_()


class _SavedTensors:
    """Record the tensors autograd saves while the block runs."""

    def __init__(self):
        self.saved = []

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def _pack(self, t):
        self.saved.append(t)
        return t

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(2, 63, 100), (7, 60), (1,)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_swiglu_matches_reference(backend, shape, dtype):
    gate, up = make(*shape, dtype=dtype), make(*shape, dtype=dtype)
    ref_gate, ref_up = to_reference(gate), to_reference(up)
    with using(backend):
        y = swiglu(gate, up)
    ref = ref_swiglu(ref_gate, ref_up)
    assert y.dtype == dtype
    assert_close("y", ref, y, tol(dtype))
    inputs, ref_inputs = {"gate": gate, "up": up}, {"gate": ref_gate, "up": ref_up}
    assert_grads_close(inputs, ref_inputs, y, ref, torch.randn_like(ref), tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_swiglu_saves_inputs_not_activation(backend):
    gate, up = make(5, 60), make(5, 60)
    with using(backend), _SavedTensors() as rec:
        y = swiglu(gate, up)
    assert [t.data_ptr() for t in rec.saved] == [gate.data_ptr(), up.data_ptr()]
    assert y.data_ptr() not in {t.data_ptr() for t in rec.saved}


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_swiglu_linear_matches_reference(backend, dtype, with_bias):
    gate, up = make(2, 31, 100, dtype=dtype), make(2, 31, 100, dtype=dtype)
    weight = make(60, 100, dtype=dtype, scale=0.1)
    bias = make(60, dtype=dtype) if with_bias else None
    inputs = {"gate": gate, "up": up, "weight": weight, "bias": bias}
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend), _SavedTensors() as rec:
        out = swiglu_linear(gate, up, weight, bias)
    ref = F.linear(ref_swiglu(refs["gate"], refs["up"]), refs["weight"], refs["bias"])
    # the [.., I] activation is recomputed in the backward, not kept
    assert {t.data_ptr() for t in rec.saved} <= {gate.data_ptr(), up.data_ptr(), weight.data_ptr()}
    assert_close("out", ref, out, tol(dtype, 2))
    assert_grads_close(inputs, refs, out, ref, torch.randn_like(ref), tol(dtype, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gated_mlp_under_autocast_matches_unfused(backend):
    """fp32 weights under autocast bf16 (the plain HF training loop): the fused backward runs under the
    forward's autocast (it failed with 'BFloat16 != float') and matches the unfused MLP's gradients."""
    torch.manual_seed(0)
    fused = GatedMLP(64, intermediate_size=96, fuse_swiglu=True).to(DEVICE)
    plain = GatedMLP(64, intermediate_size=96, fuse_swiglu=False).to(DEVICE)
    plain.load_state_dict(fused.state_dict())
    x = make(2, 33, 64, dtype=torch.float32, scale=1.0)
    x_plain = x.detach().clone().requires_grad_()
    dy = torch.randn(2, 33, 64, device=DEVICE)
    with using(backend), torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        y, y_plain = fused(x), plain(x_plain)
    assert y.dtype == y_plain.dtype == torch.bfloat16
    (y.float() * dy).sum().backward()
    (y_plain.float() * dy).sum().backward()
    assert_close("y", y_plain, y, tol(torch.bfloat16))
    assert_close("dx", x_plain.grad, x.grad, tol(torch.bfloat16, 2))
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert p.grad.dtype == torch.float32, f"{name}: grad dtype {p.grad.dtype}"
        assert_close(f"d{name}", q.grad, p.grad, tol(torch.bfloat16, 2))


@pytest.mark.parametrize("fuse_swiglu", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gated_mlp_matches_reference(backend, dtype, fuse_swiglu):
    mlp = GatedMLP(60, intermediate_size=100, fuse_swiglu=fuse_swiglu).to(dtype)
    ref_mlp = GatedMLP(60, intermediate_size=100, fuse_swiglu=False).double()
    ref_mlp.load_state_dict(mlp.state_dict())
    x = make(2, 63, 60, dtype=dtype, scale=1.0)
    ref_x = to_reference(x)
    with using(backend):
        y = mlp(x)
    ref = ref_mlp(ref_x)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close("y", ref, y, tol(dtype, 2))
    inputs = {"x": x, **dict(mlp.named_parameters())}
    ref_inputs = {"x": ref_x, **dict(ref_mlp.named_parameters())}
    assert_grads_close(inputs, ref_inputs, y, ref, torch.randn_like(ref), tol(dtype, 2))


def test_gated_mlp_sizes_and_parameter_names():
    mlp = GatedMLP(1024)
    assert mlp.intermediate_size == 2816 == default_intermediate_size(1024)
    assert GatedMLP(1024, hidden_ratio=2).intermediate_size == 1536
    assert GatedMLP(64, intermediate_size=100).intermediate_size == 100
    shapes = {k: tuple(v.shape) for k, v in GatedMLP(60, intermediate_size=100).state_dict().items()}
    assert shapes == {"gate_proj.weight": (100, 60), "up_proj.weight": (100, 60), "down_proj.weight": (60, 100)}


def test_errors_name_arguments():
    with pytest.raises(ValueError, match="hidden_act='gelu' is not supported"):
        GatedMLP(64, hidden_act="gelu")
    with pytest.raises(ValueError, match=r"x has shape \[2, 32\], expected \[\.\.\., 64\]"):
        GatedMLP(64, intermediate_size=128)(torch.randn(2, 32))
    with pytest.raises(ValueError, match=r"x has shape \[3, 4\] but y has shape \[3, 5\]"):
        swiglu(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(TypeError, match="y has dtype torch.float16"):
        swiglu(torch.randn(3, 4), torch.randn(3, 4).half())
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        swiglu(torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight has shape \[6, 5\], expected \[\*, 4\]"):
        swiglu_linear(torch.randn(3, 4), torch.randn(3, 4), torch.randn(6, 5))


def test_swiglu_takes_fla_keyword_names():
    # fla 0.6.0's swiglu_linear(x, y, weight, bias): x the gate, y the up projection
    x, y, w, b = torch.randn(3, 4), torch.randn(3, 4), torch.randn(6, 4), torch.randn(6)
    ref = torch.nn.functional.linear(torch.nn.functional.silu(x) * y, w, b)
    torch.testing.assert_close(swiglu_linear(x=x, y=y, weight=w, bias=b), ref)
    torch.testing.assert_close(swiglu(x=x, y=y), torch.nn.functional.silu(x) * y)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_swiglu_gpu_real_size(dtype):
    gate, up = make(8192, 2816, dtype=dtype, device="cuda"), make(8192, 2816, dtype=dtype, device="cuda")
    ref_gate, ref_up = to_reference(gate), to_reference(up)
    y = swiglu(gate, up)
    ref = ref_swiglu(ref_gate, ref_up)
    assert_close("y", ref, y, tol(dtype))
    inputs, ref_inputs = {"gate": gate, "up": up}, {"gate": ref_gate, "up": ref_up}
    assert_grads_close(inputs, ref_inputs, y, ref, torch.randn_like(ref), tol(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gated_mlp_gpu_real_size(dtype):
    mlp = GatedMLP(1024).to("cuda", dtype)
    ref_mlp = GatedMLP(1024, fuse_swiglu=False).to("cuda", torch.float64)
    ref_mlp.load_state_dict(mlp.state_dict())
    x = make(4, 2048, 1024, dtype=dtype, scale=1.0, device="cuda")
    ref_x = to_reference(x)
    y = mlp(x)
    ref = ref_mlp(ref_x)
    # matmuls round to the input dtype between stages (and accumulate over K = 1024 / 2816)
    ratio = tol(dtype, 10 if dtype == torch.float32 else 2)
    assert_close("y", ref, y, ratio)
    inputs = {"x": x, **dict(mlp.named_parameters())}
    ref_inputs = {"x": ref_x, **dict(ref_mlp.named_parameters())}
    assert_grads_close(inputs, ref_inputs, y, ref, torch.randn_like(ref), ratio)
