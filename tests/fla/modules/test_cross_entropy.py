"""FusedCrossEntropyLoss / cross_entropy_loss against F.cross_entropy (+ z-loss) in float64."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules import FusedCrossEntropyLoss, cross_entropy_loss
from fla.modules.cross_entropy import CEOptions, cross_entropy_bwd, cross_entropy_fwd
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using

IGNORE = -100


def ref_cross_entropy(
    logits, target, ignore_index=IGNORE, reduction="mean", label_smoothing=0.0, logit_scale=1.0, lse_square_scale=0.0
):
    """F.cross_entropy of ``logit_scale * logits`` in float64 plus ``lse_square_scale * lse^2`` (same reduction)."""
    V = logits.shape[-1]
    z, t = logits.double().reshape(-1, V) * logit_scale, target.reshape(-1)
    valid = t != ignore_index
    zloss = lse_square_scale * torch.logsumexp(z, -1).square() * valid
    ce = F.cross_entropy(z, t.long(), ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    if reduction == "mean":
        return ce + zloss.sum() / valid.sum()
    if reduction == "sum":
        return ce + zloss.sum()
    return (ce + zloss).reshape(target.shape)


def make_logits(*shape, dtype=torch.float32, device=DEVICE):
    """Random logits with a random per-row offset (so ``sum_j z_j`` of label smoothing is not ~0)."""
    logits = torch.randn(*shape, device=device) * 2 + torch.randn(*shape[:-1], 1, device=device) + 1
    return logits.to(dtype).requires_grad_()


def make_target(shape, V, device=DEVICE, ignore_every=5):
    target = torch.randint(0, V, shape, device=device)
    target.view(-1)[::ignore_every] = IGNORE  # ignored rows present, including row 0
    return target


# (V, reduction, label_smoothing, logit_scale, lse_square_scale): V=5000 spans two vocabulary blocks
CASES = [
    (100, "mean", 0.0, 1.0, 0.0),
    (1000, "sum", 0.1, 1.0, 0.0),
    (1000, "none", 0.0, 0.5, 1e-2),
    (5000, "mean", 0.2, 2.0, 1e-3),
    (5000, "none", 0.1, 1.0, 0.0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("V, reduction, smoothing, scale, zloss", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_matches_reference(backend, V, reduction, smoothing, scale, zloss, dtype):
    logits = make_logits(63, V, dtype=dtype)
    target = make_target((63,), V)
    opts = dict(reduction=reduction, label_smoothing=smoothing, logit_scale=scale, lse_square_scale=zloss)
    ref_logits = to_reference(logits)
    with using(backend):
        loss = cross_entropy_loss(logits, target, **opts)
    ref = ref_cross_entropy(ref_logits, target, **opts)
    assert loss.dtype == torch.float32
    assert_close("loss", ref, loss, tol(dtype))
    dout = torch.rand_like(ref) + 0.5
    assert_grads_close({"logits": logits}, {"logits": ref_logits}, loss, ref, dout, tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_module_batched_int32_target(backend):
    """[B, T, V] logits with an int32 [B, T] target; reduction none keeps the target's shape."""
    V = 100
    logits = make_logits(3, 21, V)
    target = make_target((3, 21), V).int()
    module = FusedCrossEntropyLoss(reduction="none", label_smoothing=0.05, lse_square_scale=1e-3)
    ref_logits = to_reference(logits)
    with using(backend):
        loss = module(logits, target)
    ref = ref_cross_entropy(ref_logits, target.long(), reduction="none", label_smoothing=0.05, lse_square_scale=1e-3)
    assert loss.shape == (3, 21)
    assert_close("loss", ref, loss, tol(torch.float32))
    assert_grads_close({"logits": logits}, {"logits": ref_logits}, loss, ref, torch.randn_like(ref), tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_rows_have_zero_loss_and_grad(backend):
    V = 100
    logits = torch.randn(20, V).requires_grad_()
    target = make_target((20,), V, ignore_every=3)
    with using(backend):
        loss = cross_entropy_loss(logits, target, reduction="none", label_smoothing=0.1, lse_square_scale=1e-2)
        loss.sum().backward()
    ignored = target == IGNORE
    assert (loss[ignored] == 0).all()
    assert (loss[~ignored] > 0).all()
    assert (logits.grad[ignored] == 0).all()
    assert (logits.grad[~ignored].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_gives_zero_not_nan(backend, reduction):
    """Documented choice: with every row ignored the mean is 0 (F.cross_entropy gives NaN), grads are 0."""
    logits = torch.randn(7, 50).requires_grad_()
    target = torch.full((7,), IGNORE)
    with using(backend):
        loss = cross_entropy_loss(logits, target, reduction=reduction, lse_square_scale=1e-2)
        loss.backward()
    assert loss.item() == 0.0
    assert (logits.grad == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_inplace_matches_out_of_place(backend):
    V = 300
    logits = torch.randn(9, V)
    target = make_target((9,), V, ignore_every=4)
    opts = CEOptions(IGNORE, 0.1, 0.8, 1e-3)
    dloss = torch.rand(9) + 0.5
    with using(backend):
        _, lse = cross_entropy_fwd(logits, target, opts)
        expected = cross_entropy_bwd(logits, target, lse, dloss, opts)
        buffer = logits.clone()
        out = cross_entropy_bwd(buffer, target, lse, dloss, opts, inplace=True)
    assert out.data_ptr() == buffer.data_ptr()
    assert_close("dlogits (in place)", expected, out, 1e-6)


def test_errors_name_arguments():
    logits = torch.randn(4, 10)
    with pytest.raises(ValueError, match=r"target has shape \[5\] but logits has shape \[4, 10\]"):
        cross_entropy_loss(logits, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="target has dtype torch.float32, expected an integer dtype"):
        cross_entropy_loss(logits, torch.zeros(4))
    with pytest.raises(TypeError, match="logits has dtype torch.int64"):
        cross_entropy_loss(torch.zeros(4, 10, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction='avg' is not one of"):
        cross_entropy_loss(logits, torch.zeros(4, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing=1.5 must be in \[0, 1\]"):
        FusedCrossEntropyLoss(label_smoothing=1.5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cross_entropy_gpu_real_size(dtype):
    N, V = 8192, 32000
    # fp16 gradients of a mean over 8192 rows underflow (p / N < 6e-8): use the sum there
    reduction = "sum" if dtype == torch.float16 else "mean"
    logits = make_logits(N, V, dtype=dtype, device="cuda")
    target = make_target((N,), V, device="cuda", ignore_every=11)
    opts = dict(reduction=reduction, label_smoothing=0.1, lse_square_scale=1e-4)
    ref_logits = to_reference(logits)
    loss = cross_entropy_loss(logits, target, **opts)
    ref = ref_cross_entropy(ref_logits, target, **opts)
    assert_close("loss", ref, loss, tol(dtype))
    dout = torch.tensor(1.3, device="cuda")
    assert_grads_close({"logits": logits}, {"logits": ref_logits}, loss, ref, dout, tol(dtype, 2))
