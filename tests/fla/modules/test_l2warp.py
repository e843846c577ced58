"""L2Wrap (``use_l2warp``): l2_warp on the logits, inside linear_cross_entropy, and in the models' loss."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules import linear_cross_entropy
from fla.modules.l2warp import l2_warp
from tests.fla.modules.test_linear_cross_entropy import make_inputs
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, using

FACTOR = 0.3  # large, so the penalty's share of the gradient is well above the tolerance


def penalized(loss, logits, factor=FACTOR):
    """The reference: a loss whose gradient is L2Wrap's, ``factor / rows / 2 * sum max(logits)^2`` (value 0)."""
    top = logits.max(-1).values
    rows = top.numel()
    extra = factor / rows / 2 * (top**2).sum()
    return loss + extra - extra.detach()


def test_l2_warp_keeps_the_loss_and_adds_the_max_logit_gradient():
    logits = torch.randn(2, 7, 11, device=DEVICE, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (14,), device=DEVICE)
    loss = F.cross_entropy(logits.reshape(14, 11), target)
    out = l2_warp(loss, logits, FACTOR)
    assert torch.equal(out, loss)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = penalized(F.cross_entropy(ref_logits.reshape(14, 11), target), ref_logits)
    (g,) = torch.autograd.grad(3 * out, logits)
    (g_ref,) = torch.autograd.grad(3 * ref, ref_logits)
    assert_close("dlogits", g_ref, g, 1e-12)
    (plain,) = torch.autograd.grad(3 * F.cross_entropy(ref_logits.reshape(14, 11), target), ref_logits)
    assert (g - plain).abs().max() > 1e-3  # the penalty is there


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_applies_the_penalty_per_chunk(backend, reduction):
    """The fused LM head + loss with ``l2_penalty_factor`` == cross-entropy on materialized logits + l2_warp,
    with ignored labels (the penalty still counts every row) and several chunks."""
    inputs = make_inputs(37, 16, 50)
    target = torch.randint(0, 50, (37,), device=DEVICE)
    target[::5] = -100
    refs = {k: to_reference(v) for k, v in inputs.items()}
    with using(backend):
        loss = linear_cross_entropy(inputs["x"], target, inputs["weight"], inputs["bias"], reduction=reduction,
                                    chunk_size=8, l2_penalty_factor=FACTOR)  # fmt: skip
    logits = F.linear(refs["x"], refs["weight"], refs["bias"])
    ref = penalized(F.cross_entropy(logits, target, reduction=reduction), logits)
    assert_close("loss", ref, loss, 1e-5)
    assert_grads_close(inputs, refs, loss, ref, torch.tensor(0.7, dtype=torch.float64, device=DEVICE), 1e-5)
    with pytest.raises(ValueError, match="needs a reduced loss"):
        linear_cross_entropy(inputs["x"], target, inputs["weight"], reduction="none", l2_penalty_factor=FACTOR)


def test_model_loss_fused_and_unfused_agree():
    """use_l2warp in a model: the same loss as without it, other gradients, and the same gradients whether the
    LM head is fused into the loss or not."""
    from fla.models import GLAConfig, GLAForCausalLM

    def run(**fields):
        torch.manual_seed(0)
        config = GLAConfig(hidden_size=32, num_hidden_layers=1, num_heads=2, vocab_size=64, fuse_norm=False,
                           fuse_cross_entropy=False, **fields)  # fmt: skip
        model = GLAForCausalLM(config).to(DEVICE)
        ids = torch.randint(0, 64, (2, 9), device=DEVICE)
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), model.lm_head.weight.grad

    base_loss, base_grad = run()
    loss, grad = run(use_l2warp=True)
    fused_loss, fused_grad = run(use_l2warp=True, fuse_linear_cross_entropy=True)
    assert_close("loss", base_loss.double(), loss, 1e-6)
    assert_close("fused loss", loss.double(), fused_loss, 1e-5)
    assert_close("fused grad", grad.double(), fused_grad, 1e-4)
    assert (grad - base_grad).abs().max() > 0
