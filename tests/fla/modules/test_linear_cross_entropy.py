"""FusedLinearCrossEntropyLoss / linear_cross_entropy against (x @ W.T + b -> cross-entropy) in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fla.modules import FusedLinearCrossEntropyLoss, linear_cross_entropy
from fla.modules.linear_cross_entropy import default_chunk_size
from tests.fla.modules.test_cross_entropy import IGNORE, make_target, ref_cross_entropy
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using


def make_inputs(N, H, V, dtype=torch.float32, bias=True, device=DEVICE, batch=()):
    x = torch.randn(*batch, N, H, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, device=device) * 2 / H**0.5).to(dtype).requires_grad_()
    b = (torch.randn(V, device=device) + 0.5).to(dtype).requires_grad_() if bias else None
    return {"x": x, "weight": weight, "bias": b}


def ref_linear_cross_entropy(inputs, target, **opts):
    logits = F.linear(inputs["x"], inputs["weight"], inputs["bias"])
    return ref_cross_entropy(logits, target, **opts)


def check(backend, inputs, target, ratio, chunk_size=None, **opts):
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        loss = linear_cross_entropy(
            inputs["x"], target, inputs["weight"], inputs["bias"], chunk_size=chunk_size, **opts
        )
    ref = ref_linear_cross_entropy(refs, target, **opts)
    assert loss.dtype == torch.float32 and loss.shape == ref.shape
    assert_close("loss", ref, loss, ratio)
    dout = torch.rand_like(ref) + 0.5
    assert_grads_close(inputs, refs, loss, ref, dout, ratio)


# (V, bias, reduction, label_smoothing, logit_scale, lse_square_scale, chunk_size)
CASES = [
    (100, False, "mean", 0.0, 1.0, 0.0, None),
    (1000, True, "mean", 0.1, 0.5, 1e-2, 16),
    (1000, True, "sum", 0.0, 1.0, 1e-3, 7),
    (100, True, "none", 0.2, 2.0, 0.0, 16),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("V, bias, reduction, smoothing, scale, zloss, chunk", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_cross_entropy_matches_reference(backend, V, bias, reduction, smoothing, scale, zloss, chunk, dtype):
    inputs = make_inputs(63, 60, V, dtype, bias)
    target = make_target((63,), V)
    opts = dict(reduction=reduction, label_smoothing=smoothing, logit_scale=scale, lse_square_scale=zloss)
    check(backend, inputs, target, tol(dtype, 2), chunk_size=chunk, **opts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_under_autocast_matches_autocast_linear(backend):
    """fp32 x and weight under autocast (a plain one-rank flame run): the matmuls run in the autocast
    dtype as F.linear's would (fp16 here: the interpreter's bf16 dot is wrong), grads come back fp32."""
    amp = torch.float16
    inputs = make_inputs(63, 60, 1000, torch.float32, bias=True)
    plain = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    target = make_target((63,), 1000)
    with using(backend), torch.autocast(DEVICE.type, dtype=amp):
        loss = linear_cross_entropy(inputs["x"], target, inputs["weight"], inputs["bias"], chunk_size=16)
        logits = F.linear(plain["x"], plain["weight"], plain["bias"])
    assert logits.dtype == amp
    ref = F.cross_entropy(logits.float(), target)
    assert loss.dtype == torch.float32
    assert_close("loss", ref, loss, tol(amp))
    loss.backward()
    ref.backward()
    for name, t in inputs.items():
        assert t.grad.dtype == torch.float32, f"d{name}: {t.grad.dtype}"
        assert_close(f"d{name}", plain[name].grad, t.grad, tol(amp, 2))
    with using(backend), torch.no_grad():  # the same computation as on inputs cast by hand (not fp32's)
        x, w, b = (inputs[k].to(amp) for k in ("x", "weight", "bias"))
        cast = linear_cross_entropy(x, target, w, b, chunk_size=16)
    assert torch.equal(loss.detach(), cast)


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_batched_input_reduction_none(backend):
    """x [B, T, H] and target [B, T]: reduction none returns [B, T]; the backward re-runs the chunks."""
    inputs = make_inputs(21, 60, 100, batch=(3,))
    target = make_target((3, 21), 100).int()
    module = FusedLinearCrossEntropyLoss(reduction="none", lse_square_scale=1e-3, chunk_size=10)
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        loss = module(inputs["x"], target, inputs["weight"], inputs["bias"])
    ref = ref_linear_cross_entropy(refs, target.long(), reduction="none", lse_square_scale=1e-3)
    assert loss.shape == (3, 21)
    assert_close("loss", ref, loss, tol(torch.float32))
    assert_grads_close(inputs, refs, loss, ref, torch.randn_like(ref), tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_requires_grad_and_no_grad(backend):
    inputs = make_inputs(30, 60, 100)
    inputs["x"].requires_grad_(False)
    target = make_target((30,), 100)
    check(backend, inputs, target, tol(torch.float32), chunk_size=8)
    with using(backend), torch.no_grad():
        loss = linear_cross_entropy(inputs["x"], target, inputs["weight"], inputs["bias"])
    assert not loss.requires_grad
    ref = ref_linear_cross_entropy({k: to_reference(v, False) for k, v in inputs.items()}, target)
    assert_close("loss (no_grad)", ref, loss, tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_gives_zero_not_nan(backend):
    inputs = make_inputs(9, 60, 100)
    target = torch.full((9,), IGNORE)
    with using(backend):
        loss = linear_cross_entropy(inputs["x"], target, inputs["weight"], inputs["bias"], chunk_size=4)
        loss.backward()
    assert loss.item() == 0.0
    for name, t in inputs.items():
        assert (t.grad == 0).all(), name


class _MaxNumel(TorchDispatchMode):
    """Largest tensor any op produces while the mode is on."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_full_logits_never_materialized():
    N, H, V, chunk = 256, 16, 1000, 32
    inputs = make_inputs(N, H, V)
    target = make_target((N,), V)
    with using("torch"), _MaxNumel() as mode:
        loss = linear_cross_entropy(inputs["x"], target, inputs["weight"], inputs["bias"], chunk_size=chunk)
        loss.backward()
    assert mode.max_numel <= chunk * V < N * V, f"a tensor of {mode.max_numel} elements was created"


def test_default_chunk_size():
    assert default_chunk_size(16384, 1024, 32000) == 2048  # chunk logits = 2 * V * H elements
    assert default_chunk_size(63, 60, 1000) == 63  # small problems run in one chunk
    for N, H, V in [(100_000, 4096, 150_000), (8192, 256, 256_000), (5, 8, 10)]:
        C = default_chunk_size(N, H, V)
        assert 1 <= C <= N and C * V <= max(1 << 28, V)


def test_errors_name_arguments():
    x, w, t = torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"weight has shape \[10, 7\], expected \[\*, 8\]"):
        linear_cross_entropy(x, t, torch.randn(10, 7))
    with pytest.raises(ValueError, match=r"target has shape \[5\] but x has shape \[4, 8\]"):
        linear_cross_entropy(x, torch.zeros(5, dtype=torch.long), w)
    with pytest.raises(TypeError, match="target has dtype torch.float32"):
        linear_cross_entropy(x, torch.zeros(4), w)
    with pytest.raises(TypeError, match="weight has dtype torch.float16"):
        linear_cross_entropy(x, t, w.half())
    with pytest.raises(ValueError, match=r"bias has shape \[9\], expected \[10\]"):
        linear_cross_entropy(x, t, w, torch.randn(9))
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive int"):
        linear_cross_entropy(x, t, w, chunk_size=0)
    with pytest.raises(ValueError, match="reduction='avg' is not one of"):
        FusedLinearCrossEntropyLoss(reduction="avg")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_linear_cross_entropy_gpu_real_size(dtype):
    N, H, V = 8192, 1024, 32000
    inputs = make_inputs(N, H, V, dtype, bias=False, device="cuda")
    target = make_target((N,), V, device="cuda", ignore_every=11)
    # fp16 gradients of a mean over 8192 rows are subnormal (|dx| ~ 1e-5): use the sum there
    reduction = "sum" if dtype == torch.float16 else "mean"
    opts = dict(reduction=reduction, label_smoothing=0.1, lse_square_scale=1e-4)
    # logits are rounded to the input dtype before the loss, as in the unfused x @ W.T
    check("triton", inputs, target, tol(dtype, 10 if dtype == torch.float32 else 2), **opts)


@pytest.mark.gpu
def test_linear_cross_entropy_gpu_memory_vs_unfused():
    """At N=16384, H=1024, V=32000 bf16 the fused fwd+bwd peak is <= 25% of x @ W.T -> F.cross_entropy."""
    N, H, V = 16384, 1024, 32000
    inputs = make_inputs(N, H, V, torch.bfloat16, bias=False, device="cuda")
    x, w = inputs["x"], inputs["weight"]
    target = make_target((N,), V, device="cuda", ignore_every=11)

    def peak(fn):
        x.grad = w.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    unfused = peak(lambda: F.cross_entropy(x @ w.t(), target, ignore_index=IGNORE))
    fused = peak(lambda: linear_cross_entropy(x, target, w))
    assert fused <= 0.25 * unfused, f"fused peak {fused / 2**20:.0f} MiB > 25% of unfused {unfused / 2**20:.0f} MiB"
