"""ForgettingAttention against FoX written out by hand in float64 (projections, gate, qk norms, output gate)."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import ForgettingAttention
from fla.ops.forgetting_attn import naive_forgetting_attn
from tests.harness import DEVICE, assert_close, tol


def reference(layer: ForgettingAttention, x: torch.Tensor) -> torch.Tensor:
    """The layer's maths in float64 from its parameters (per-head RMS norm of q and k, eps 1e-5)."""
    x = x.double()
    p = {name: t.detach().double() for name, t in layer.named_parameters()}
    B, T, _ = x.shape
    H, Hkv, D = layer.num_heads, layer.num_kv_heads, layer.head_dim

    def proj(name):
        return F.linear(x, p[f"{name}.weight"], p.get(f"{name}.bias"))

    q, k, v = proj("q_proj").view(B, T, H, D), proj("k_proj").view(B, T, Hkv, D), proj("v_proj").view(B, T, Hkv, D)
    if layer.qk_norm:
        q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + 1e-5) * p["q_norm.weight"].view(H, D)
        k = k * torch.rsqrt(k.square().mean(-1, keepdim=True) + 1e-5) * p["k_norm.weight"].view(Hkv, D)
    f = F.logsigmoid(proj("f_proj"))  # [B, T, H]
    o = naive_forgetting_attn(q, k, v, f, window_size=layer.window_size).reshape(B, T, -1)
    if layer.use_output_gate:
        o = torch.sigmoid(proj("g_proj")) * o
    return F.linear(o, p["o_proj.weight"])


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, marks=pytest.mark.slow, id="plain"),
        pytest.param(dict(num_kv_heads=2, qk_norm=True, use_output_gate=True, window_size=5, qkv_bias=True), id="all"),
    ],
)
def test_layer_matches_the_maths(kwargs):
    torch.manual_seed(0)
    layer = ForgettingAttention(hidden_size=48, num_heads=4, layer_idx=0, **kwargs).to(DEVICE)
    with torch.no_grad():  # non-trivial norm weights and gate biases
        for name, t in layer.named_parameters():
            if name.endswith("norm.weight") or name.endswith("bias"):
                t.uniform_(0.5, 1.5)
    x = torch.randn(2, 21, 48, device=DEVICE)
    o, attn, cache = layer(x)
    assert attn is None and cache is None
    assert_close("o", reference(layer, x), o, tol(torch.float32, 10))


def test_bad_sizes_are_value_errors():
    with pytest.raises(ValueError, match="hidden_size=50 is not a multiple of num_heads=4"):
        ForgettingAttention(hidden_size=50, num_heads=4)
    with pytest.raises(ValueError, match="num_heads=4 is not a multiple of num_kv_heads=3"):
        ForgettingAttention(hidden_size=48, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="window_size must be a positive integer or None, got 0"):
        ForgettingAttention(hidden_size=48, num_heads=4, window_size=0)
    layer = ForgettingAttention(hidden_size=48, num_heads=4)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 3, 40\], expected \[B, T, 48\]"):
        layer(torch.randn(2, 3, 40))
