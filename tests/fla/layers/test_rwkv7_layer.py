"""RWKV7Attention against fla 0.6.0's time-mixing maths written out step by step in float64 (token shift, the six
mixes, decay / rate / value-mix LoRAs, kk, the key update, the DPLR recurrence, GroupNorm, the r_k bonus, the
gate, o_proj), and the ``v_first`` hand-over between layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fla.layers.rwkv7 import RWKV7Attention
from fla.models.rwkv7.modeling_rwkv7 import RWKV7FeedForward
from fla.ops.generalized_delta_rule import naive_recurrent_dplr_delta_rule
from tests.harness import assert_close


def reference(layer: RWKV7Attention, x: torch.Tensor, v_first: torch.Tensor | None):
    """fla 0.6.0's ``RWKV7Attention.forward`` (dense batch, no cache) in plain PyTorch: ``(o, v_first)``."""
    H = layer.num_heads
    delta = F.pad(x, (0, 0, 1, -1)) - x  # x_{t-1} - x_t, zero before the first token
    xr, xw, xk, xv, xa, xg = (x + delta * getattr(layer, n) for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))
    r, k, v = layer.r_proj(xr), layer.k_proj(xk), layer.v_proj(xv)
    w = -math.exp(-0.5) * torch.sigmoid(layer.w_lora(xw))
    if layer.layer_idx == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(layer.v_lora(xv))
    a = torch.sigmoid(layer.a_lora(xa))
    g = layer.g_lora(xg)
    heads = lambda t: t.unflatten(-1, (H, -1))
    kk = F.normalize(heads(k * layer.k_k), dim=-1)
    k = k * (1 + (a - 1) * layer.k_a)
    r, w, k, a, v = heads(r), heads(w), heads(k), heads(a), heads(v)
    o, _ = naive_recurrent_dplr_delta_rule(r, k, v, -kk, kk * a, w, scale=1.0)
    B, T = x.shape[:2]
    norm = layer.g_norm
    o = F.group_norm(o.reshape(B * T, -1), H, norm.weight, norm.bias, eps=norm.eps).view(B, T, -1)
    o = (o + ((r * k * layer.r_k).sum(-1, keepdim=True) * v).flatten(-2)) * g
    return layer.o_proj(o), v_first


@pytest.mark.parametrize("fuse_norm", [True, False])
def test_layer_matches_fla_maths(fuse_norm):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=48, head_dim=12, decay_low_rank_dim=8, gate_low_rank_dim=8, a_low_rank_dim=8)
    kwargs.update(v_low_rank_dim=4, num_hidden_layers=3, fuse_norm=fuse_norm)
    layers = [RWKV7Attention(layer_idx=i, **kwargs).double() for i in (0, 1)]
    with torch.no_grad():  # away from the init's constants so every term matters
        for layer in layers:
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    x0, x1 = torch.randn(2, 2, 23, 48, dtype=torch.float64)
    o0, _, _, v_first = layers[0](x0)
    ref0, ref_v_first = reference(layers[0], x0, None)
    assert_close("layer 0", ref0, o0, 1e-6 if fuse_norm else 1e-10)  # fused l2 norm: eps 1e-6 under the root
    assert_close("v_first", ref_v_first, v_first, 1e-10)
    o1, _, _, passed = layers[1](x1, v_first=v_first)
    ref1, _ = reference(layers[1], x1, ref_v_first)
    assert_close("layer 1", ref1, o1, 1e-6 if fuse_norm else 1e-10)
    assert passed is v_first


def test_layer_after_the_first_needs_v_first():
    layer = RWKV7Attention(hidden_size=32, head_dim=16, layer_idx=1, num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"v_first must be layer 0's values of shape \[1, 5, 32\], got None"):
        layer(torch.randn(1, 5, 32))
    assert not hasattr(RWKV7Attention(hidden_size=32, head_dim=16, layer_idx=0), "v_lora")
    with pytest.raises(ValueError, match="hidden_size=32 is not a multiple of head_dim=12"):
        RWKV7Attention(hidden_size=32, head_dim=12)


def test_init_values_follow_fla():
    # depth-dependent constants of fla 0.6.0 (RWKV-LM's): layer 1 of 4, hidden 8, head_dim 4
    layer = RWKV7Attention(hidden_size=8, head_dim=4, layer_idx=1, num_hidden_layers=4)
    ddd = torch.arange(8) / 8
    assert_close("x_r", 1 - ddd ** (0.2 * 0.75), layer.x_r.detach().flatten(), 1e-6)
    assert_close("x_a", 1 - ddd ** (0.9 * 0.75), layer.x_a.detach().flatten(), 1e-6)
    zigzag = ((torch.arange(8) % 4) - 1.5) / 1.5
    zigzag = zigzag * zigzag.abs()
    www = -6 + 6 * (torch.arange(8) / 7) ** (1 + (1 / 3) ** 0.3)
    assert_close("w bias", www + 0.5 + zigzag * 2.5, layer.w_lora.lora[2].bias.detach(), 1e-6)
    assert_close("g_norm", torch.full((8,), 0.5**0.7), layer.g_norm.weight.detach(), 1e-6)
    assert torch.all(layer.k_a == 1.02) and torch.all(layer.r_k == -0.04)
    ffn = RWKV7FeedForward(8, layer_idx=1, num_hidden_layers=4)
    assert_close("ffn x_k", 1 - ddd ** (0.75**4), ffn.x_k.detach(), 1e-6)
    assert ffn.intermediate_size == 32
