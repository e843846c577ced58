"""LightNetAttention == its formula written out in float64: softmax-normalized keys over time, GLA, gated norm."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import LightNetAttention
from fla.models import FLACache
from fla.ops.gla import naive_recurrent_gla
from tests.harness import DEVICE, assert_close, tol


def _causal_conv(x, weight):
    return F.conv1d(F.pad(x.transpose(1, 2), (weight.shape[-1] - 1, 0)), weight, groups=x.shape[-1]).transpose(1, 2)


def _reference(layer, x):
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        convs = (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)
        q, k, v = (_causal_conv(t, c.weight) for t, c in zip((q, k, v), convs))
    H, K, V = layer.num_heads, layer.expand_ratio, layer.head_v_dim
    logits = k.unflatten(-1, (H, K))
    z = torch.logcumsumexp(logits, 1)  # the running normalizer over time, per channel
    g = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1] - z[:, 1:]], 1)
    o, _ = naive_recurrent_gla(F.silu(q).unflatten(-1, (H, K)), torch.exp(logits - z), v.unflatten(-1, (H, V)), g)
    o = o.flatten(-2)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.g_norm.eps) * layer.g_norm.weight
    return layer.o_proj(o * F.silu(layer.g_proj(x)))


@pytest.mark.parametrize("use_short_conv", [False, True], ids=["plain", "conv"])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(use_short_conv, training):
    torch.manual_seed(0)
    layer = LightNetAttention(hidden_size=60, expand_ratio=20, use_short_conv=use_short_conv, gate_low_rank_dim=8)
    layer = layer.to(DEVICE, torch.float64).train(training)
    assert (layer.num_heads, layer.head_k_dim, layer.head_v_dim) == (3, 20, 20)
    x = torch.randn(2, 23, 60, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", _reference(layer, x), out, tol(torch.float64, 1e3))
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_parameter_names_are_fla():
    layer = LightNetAttention(hidden_size=64, expand_ratio=16, use_short_conv=True, gate_low_rank_dim=8)
    shapes = {name: list(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "q_proj.weight": [64, 64], "k_proj.weight": [64, 64], "v_proj.weight": [64, 64],
        "q_conv1d.weight": [64, 1, 4], "k_conv1d.weight": [64, 1, 4], "v_conv1d.weight": [64, 1, 4],
        "g_proj.0.weight": [8, 64], "g_proj.1.weight": [64, 8], "g_norm.weight": [64], "o_proj.weight": [64, 64],
    }  # fmt: skip


def test_heads_follow_fla():
    assert LightNetAttention(hidden_size=64, expand_ratio=16).num_heads == 4
    layer = LightNetAttention(hidden_size=64, num_heads=2, expand_ratio=16)  # both given: used as they are
    assert (layer.num_heads, layer.key_dim, layer.head_v_dim) == (2, 32, 32)
    assert LightNetAttention(hidden_size=64, num_heads=2, expand_ratio=None).expand_ratio == 32


@pytest.mark.parametrize("use_short_conv", [False, True], ids=["plain", "conv"])
def test_cache_decoding_continues_prefill(use_short_conv):
    torch.manual_seed(0)
    layer = LightNetAttention(hidden_size=32, expand_ratio=8, use_short_conv=use_short_conv, layer_idx=1).eval()
    x = torch.randn(2, 80, 32, device=DEVICE)
    with torch.no_grad():
        full, _, _ = layer(x)
        cache = FLACache()
        _, _, cache = layer(x[:, :77], past_key_values=cache)
        state = cache[1]["recurrent_state"]
        assert isinstance(state, tuple) and state[0].shape == (2, 4, 8, 8) and state[1].shape == (2, 1, 4, 8)
        steps = [layer(x[:, t : t + 1], past_key_values=cache)[0] for t in range(77, 80)]
    assert_close("decode", full[:, 77:], torch.cat(steps, 1), tol(torch.float32, 20))


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="expand_ratio=128 is larger than hidden_size=64"):
        LightNetAttention(hidden_size=64)
    with pytest.raises(ValueError, match="one of num_heads and expand_ratio must be given"):
        LightNetAttention(hidden_size=64, expand_ratio=None)
    with pytest.raises(ValueError, match="hidden_size=72 is not a multiple of num_heads=5"):
        LightNetAttention(hidden_size=72, expand_ratio=14)
    with pytest.raises(ValueError, match="mode='fused_chunk' is not one of"):
        LightNetAttention(mode="fused_chunk", hidden_size=64, expand_ratio=16)
    with pytest.raises(ValueError, match="num_heads must be a positive int or None, got 0"):
        LightNetAttention(hidden_size=64, num_heads=0, expand_ratio=None)
