"""FusedKLDivLoss / fused_kl_div_loss (fla 0.6.0's distillation loss) against a float64 KL of full logits."""

import pytest
import torch
import torch.nn.functional as F

from fla.modules import FusedKLDivLoss, fused_kl_div_loss
from tests.harness import assert_close, tol


def _reference(x, tx, w, tw):
    """KL(teacher || student) per row, summed over the vocabulary, averaged over rows (float64)."""
    log_q = F.log_softmax(x.double() @ w.double().T, -1)
    log_p = F.log_softmax(tx.double() @ tw.double().T, -1)
    return (log_p.exp() * (log_p - log_q)).sum() / x.shape[0]


def _inputs(N=37, H=24, HT=20, V=53, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    x = (torch.randn(N, H) * 2).to(dtype).requires_grad_()
    w = torch.randn(V, H).to(dtype).requires_grad_()
    tx, tw = (torch.randn(N, HT) * 2).to(dtype), torch.randn(V, HT).to(dtype)
    return x, tx, w, tw


@pytest.mark.parametrize("chunk_size", [None, 5, 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_grads_match_full_kl(chunk_size, dtype):
    x, tx, w, tw = _inputs(dtype=dtype)
    loss = fused_kl_div_loss(x, tx, w, tw, chunk_size=chunk_size)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = _reference(x64, tx, w64, tw)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    bound = tol(dtype, 4)
    assert_close("loss", ref, loss, bound)
    dout = torch.tensor(1.7)
    loss.backward(dout)
    ref.backward(dout.double())
    assert x.grad.dtype == dtype and w.grad.dtype == dtype
    assert_close("dx", x64.grad, x.grad, bound)
    assert_close("dw", w64.grad, w.grad, bound)


def test_module_same_as_function_and_student_only_grads():
    x, tx, w, tw = _inputs()
    loss = FusedKLDivLoss()(x, tx, w, tw)
    assert torch.equal(loss, fused_kl_div_loss(x, tx, w, tw))
    (dx,) = torch.autograd.grad(loss, [x])  # weight needs no gradient: dW is not formed
    x64 = x.detach().double().requires_grad_()
    (dx_ref,) = torch.autograd.grad(_reference(x64, tx, w.detach(), tw), [x64])
    assert_close("dx", dx_ref, dx, tol(torch.float32, 4))
    same = fused_kl_div_loss(tx.clone().requires_grad_(), tx, tw.clone(), tw)  # student == teacher
    assert abs(same.item()) < 1e-6


def test_bad_input():
    x, tx, w, tw = _inputs()
    with pytest.raises(ValueError, match="reduction"):
        FusedKLDivLoss(reduction="sum")
    with pytest.raises(ValueError, match="reduction"):
        fused_kl_div_loss(x, tx, w, tw, reduction="mean")
    with pytest.raises(ValueError, match="target_x"):
        fused_kl_div_loss(x, tx[:-1], w, tw)
    with pytest.raises(ValueError, match="target_weight"):
        fused_kl_div_loss(x, tx, w, tw[:-1])
    with pytest.raises(ValueError, match="weight"):
        fused_kl_div_loss(x, tx, w[:, :-1], tw)
    with pytest.raises(TypeError, match="weight has dtype torch.float64"):
        fused_kl_div_loss(x, tx, w.detach().double(), tw)
    with pytest.raises(ValueError, match="chunk_size=0"):
        fused_kl_div_loss(x, tx, w, tw, chunk_size=0)
    with pytest.raises(ValueError, match="require grad"):
        fused_kl_div_loss(x, tx.requires_grad_(), w, tw)


def test_autocast_runs_both_heads_in_its_dtype():
    """Under torch.autocast the four tensors are cast first (as F.linear's): the same loss and gradients as
    bfloat16 inputs, the gradients back in float32."""
    x, tx, w, tw = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_kl_div_loss(x, tx, w, tw)
    loss.backward()
    xb, wb = x.detach().bfloat16().requires_grad_(), w.detach().bfloat16().requires_grad_()
    ref = fused_kl_div_loss(xb, tx.bfloat16(), wb, tw.bfloat16())
    ref.backward()
    assert torch.equal(loss, ref) and x.grad.dtype == w.grad.dtype == torch.float32
    assert torch.equal(x.grad, xb.grad.float()) and torch.equal(w.grad, wb.grad.float())
