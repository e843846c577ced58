"""The LinearMixer template: a new layer is its constructor + ``mix``; forward, padding, varlen and cache come free.

``ToyGLA`` (a per-head scalar decay, GQA, short convs, gated output norm) is written the way a new
family is: the checks below (formula, padded == varlen == one sequence at a time, prefill + decode
== full forward, errors) then hold without any code of its own for them.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.layers.linear_mixer import LinearMixer
from fla.models import FLACache
from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla, naive_recurrent_simple_gla
from tests.harness import DEVICE, assert_close, tol

RATIO = tol(torch.float64, 1e3)


class ToyGLA(LinearMixer):
    """Simple GLA on the template: ``g_t = logsigmoid(gk_proj(x_t))`` per kv head."""

    chunk_op = staticmethod(chunk_simple_gla)
    recurrent_op = staticmethod(fused_recurrent_simple_gla)

    def __init__(self, hidden_size=64, num_heads=4, num_kv_heads=None, use_short_conv=False, layer_idx=None):
        super().__init__()
        self.setup("chunk", hidden_size, 0.5, 1.0, num_heads, num_kv_heads, layer_idx, feature_map=None)
        self.build_qkv(hidden_size, use_short_conv, conv_size=4, conv_bias=False)
        self.gk_proj = nn.Linear(hidden_size, self.num_kv_heads)
        self.build_output(hidden_size, True, "swish", fuse_norm=True, elementwise_affine=True, norm_eps=1e-5)

    def mix(self, step, q, k, v):
        g = self.expand(F.logsigmoid(self.gk_proj(step.x)), dim=-1)
        return self.run(step, q, k, v, g=g)


def _layer(**kw):
    torch.manual_seed(0)
    return ToyGLA(layer_idx=0, **kw).to(DEVICE, torch.float64)


@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_template_layer_matches_formula(training):
    layer = _layer(num_kv_heads=2).train(training)
    x = torch.randn(2, 23, 64, device=DEVICE, dtype=torch.float64)
    out, attn, cache = layer(x)
    assert attn is None and cache is None
    q = layer.q_proj(x).unflatten(-1, (4, 8))
    k = layer.k_proj(x).unflatten(-1, (2, 8)).repeat_interleave(2, 2)
    v = layer.v_proj(x).unflatten(-1, (2, 16)).repeat_interleave(2, 2)
    g = F.logsigmoid(layer.gk_proj(x)).repeat_interleave(2, 2)
    o, _ = naive_recurrent_simple_gla(q, k, v, g=g)
    norm = layer.g_norm_swish_gate
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    ref = layer.o_proj((o * F.silu(layer.g_proj(x).unflatten(-1, (4, 16)))).flatten(-2))
    assert_close("out", ref, out, RATIO)
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_padded_equals_varlen_equals_each_sequence(use_short_conv):
    layer = _layer(use_short_conv=use_short_conv).eval()
    lens = [5, 1, 9]
    xs = [torch.randn(1, n, 64, device=DEVICE, dtype=torch.float64) for n in lens]
    each = [layer(x)[0] for x in xs]
    cu = torch.tensor([0, 5, 6, 15], device=DEVICE, dtype=torch.int32)
    packed = layer(torch.cat(xs, 1), cu_seqlens=cu)[0]
    assert_close("varlen", torch.cat(each, 1), packed, RATIO)
    padded = torch.zeros(3, 9, 64, device=DEVICE, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.long, device=DEVICE)
    for i, (n, x) in enumerate(zip(lens, xs)):
        padded[i, 9 - n :], mask[i, 9 - n :] = x[0], 1
    out = layer(padded, attention_mask=mask)[0]
    for i, (n, ref) in enumerate(zip(lens, each)):
        assert_close(f"padded row {i}", ref[0], out[i, 9 - n :], RATIO)
        assert (out[i, : 9 - n] == 0).all()


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_prefill_then_decode_with_cache_equals_full_forward(use_short_conv):
    layer = _layer(num_kv_heads=1, use_short_conv=use_short_conv).eval()
    x = torch.randn(2, 12, 64, device=DEVICE, dtype=torch.float64)
    full = layer(x)[0]
    cache = FLACache()
    outs = [layer(x[:, :7], past_key_values=cache)[0]]
    outs += [layer(x[:, t : t + 1], past_key_values=cache)[0] for t in range(7, 12)]
    assert cache.get_seq_length(0) == 12
    assert_close("cached", full, torch.cat(outs, 1), RATIO)


def test_template_errors_name_the_problem():
    layer = _layer()
    with pytest.raises(ValueError, match=r"ToyGLA: hidden_states has shape \[2, 5, 32\], expected \[B, T, 64\]"):
        layer(torch.randn(2, 5, 32, device=DEVICE, dtype=torch.float64))
    with pytest.raises(ValueError, match="ToyGLA: cu_seqlens cannot be combined with a non-empty cache"):
        cache = FLACache()
        layer(torch.randn(1, 3, 64, device=DEVICE, dtype=torch.float64), past_key_values=cache)
        cu = torch.tensor([0, 3], device=DEVICE)
        layer(torch.randn(1, 3, 64, device=DEVICE, dtype=torch.float64), past_key_values=cache, cu_seqlens=cu)
    with pytest.raises(ValueError, match="ToyGLA: mode='fast' is not one of"):
        ToyGLA().setup("fast", 64, 1, 1, 4, None, None)
