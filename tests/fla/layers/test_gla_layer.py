"""GatedLinearAttention layer == its formula written out with the naive recurrence (float64)."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import GatedLinearAttention
from fla.models import FLACache
from fla.ops.gla import naive_recurrent_gla
from tests.harness import DEVICE, assert_close, tol


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("num_kv_heads", [None, 1])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(num_kv_heads, training):
    torch.manual_seed(0)
    layer = GatedLinearAttention(hidden_size=100, num_heads=2, num_kv_heads=num_kv_heads, clamp_min=-0.1)
    layer = layer.to(DEVICE, torch.float64).train(training)
    x = torch.randn(2, 23, 100, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    groups = 2 // (num_kv_heads or 2)
    q = layer.q_proj(x).unflatten(-1, (2, 25))
    k = layer.k_proj(x).unflatten(-1, (-1, 25)).repeat_interleave(groups, 2)
    v = layer.v_proj(x).unflatten(-1, (-1, 50)).repeat_interleave(groups, 2)
    gk = layer.gk_proj(x).unflatten(-1, (-1, 25)).repeat_interleave(groups, 2)
    gk = (F.logsigmoid(gk) / 16).clamp_min(-0.1)
    o, _ = naive_recurrent_gla(q, k, v, gk)
    norm = layer.g_norm_swish_gate
    ref = layer.o_proj((_rms(o, norm.weight, norm.eps) * F.silu(layer.g_proj(x).unflatten(-1, (2, 50)))).flatten(-2))
    assert_close("out", ref, out, tol(torch.float64, 1e3))
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"hidden_size \* expand_k = 30.5 is not an integer"):
        GatedLinearAttention(hidden_size=61, num_heads=1)
    with pytest.raises(ValueError, match="key dim 30 is not a multiple of num_heads=4"):
        GatedLinearAttention(hidden_size=60, num_heads=4)
    layer = GatedLinearAttention(hidden_size=64, num_heads=4)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 5, 32\], expected \[B, T, 64\]"):
        layer(torch.randn(2, 5, 32, device=DEVICE))
    with pytest.raises(ValueError, match="layer_idx is required"):
        layer(torch.randn(2, 5, 64, device=DEVICE), past_key_values=FLACache())
