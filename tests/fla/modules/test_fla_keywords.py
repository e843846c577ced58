"""fla 0.6.0's extra module keywords: PowGLU in GatedMLP, and the hints / unsupported options of the loss, conv
and rotary modules (accepted, or refused with an error naming them)."""

import pytest
import torch

from fla.modules import FusedCrossEntropyLoss, FusedLinearCrossEntropyLoss, GatedMLP, RotaryEmbedding, ShortConvolution
from fla.modules.mlp import powglu
from tests.harness import DEVICE, assert_close


def test_powglu_matches_its_formula_in_float64():
    gate = torch.linspace(-4, 4, 101, dtype=torch.float64, device=DEVICE)
    up = torch.randn(101, dtype=torch.float64, device=DEVICE)
    ref = torch.where(gate > 0, gate.clamp(min=1e-30) ** (3.0 / (gate.clamp(min=0).sqrt() + 1)), gate)
    ref = ref * torch.sigmoid(gate) * up
    assert_close("powglu", ref, powglu(gate, up, 3.0).double(), 1e-6)
    x = torch.randn(2, 5, 16, device=DEVICE, requires_grad=True)
    mlp = GatedMLP(16, intermediate_size=32, hidden_act="powlu", powglu_power=2.0).to(DEVICE)
    out = mlp(x)
    expected = mlp.down_proj(powglu(mlp.gate_proj(x), mlp.up_proj(x), 2.0))
    assert torch.equal(out, expected)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_linear_cross_entropy_num_chunks_is_a_chunk_hint():
    x = torch.randn(37, 16, device=DEVICE)
    w = torch.randn(50, 16, device=DEVICE)
    t = torch.randint(0, 50, (37,), device=DEVICE)
    ref = FusedLinearCrossEntropyLoss()(x, t, w)
    for n in (1, 3, 37):
        loss = FusedLinearCrossEntropyLoss(num_chunks=n, accumulate_grad_in_fp32=True)(x, t, w)
        assert_close(f"num_chunks={n}", ref.double(), loss, 1e-6)


def test_unsupported_options_are_refused_by_name():
    for cls in (FusedCrossEntropyLoss, FusedLinearCrossEntropyLoss):
        for name, value in (("logit_softcapping", 30.0), ("process_group", object())):
            with pytest.raises(ValueError, match=name):
                cls(**{name: value})
    with pytest.raises(ValueError, match="return_z_loss"):
        FusedCrossEntropyLoss(return_z_loss=True)
    FusedCrossEntropyLoss(inplace_backward=True)
    with pytest.raises(ValueError, match="num_chunks"):
        FusedLinearCrossEntropyLoss(num_chunks=0)
    with pytest.raises(ValueError, match="scale_base"):
        RotaryEmbedding(32, scale_base=512)
    RotaryEmbedding(32, pos_idx_in_fp32=True)
    ShortConvolution(8, 4, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        ShortConvolution(8, 4, backend="npu")
