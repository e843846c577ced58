"""HGRN2Attention == its formula written out with the naive GLA recurrence (float64): k = 1 - exp(g), lower bounds."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import HGRN2Attention
from fla.models import FLACache
from fla.ops.gla import naive_recurrent_gla
from tests.harness import DEVICE, assert_close, tol


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _causal_conv(x, weight):
    return F.conv1d(F.pad(x.transpose(1, 2), (weight.shape[-1] - 1, 0)), weight, groups=x.shape[-1]).transpose(1, 2)


def _reference(layer, x, lower_bound):
    q, f, i = layer.q_proj(x), layer.f_proj(x), layer.i_proj(x)
    if layer.use_short_conv:
        convs = (layer.q_conv1d, layer.f_conv1d, layer.i_conv1d)
        q, f, i = (_causal_conv(t, c.weight) for t, c in zip((q, f, i), convs))
    forget = torch.sigmoid(f)
    if lower_bound is not None and layer.layer_idx != 0:
        forget = lower_bound + (1 - lower_bound) * forget  # the bound, as a probability (fla's logaddexp form)
    H, K, V = layer.num_heads, layer.expand_ratio, layer.head_v_dim
    g = forget.log().unflatten(-1, (H, K))
    k = (1 - forget).unflatten(-1, (H, K))  # input gate = 1 - forget gate
    o, _ = naive_recurrent_gla(F.silu(q).unflatten(-1, (H, K)), k, i.unflatten(-1, (H, V)), g)
    return layer.o_proj(_rms(o.flatten(-2), layer.g_norm.weight, layer.g_norm.eps))


@pytest.mark.parametrize("use_short_conv", [False, True], ids=["plain", "conv"])
@pytest.mark.parametrize("layer_idx, bounded", [(2, True), (0, True), (1, False)], ids=["bound", "layer0", "none"])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(use_short_conv, layer_idx, bounded, training):
    torch.manual_seed(0)
    layer = HGRN2Attention(hidden_size=60, expand_ratio=20, use_short_conv=use_short_conv, layer_idx=layer_idx)
    layer = layer.to(DEVICE, torch.float64).train(training)
    assert (layer.num_heads, layer.head_k_dim, layer.head_v_dim) == (3, 20, 20)
    x = torch.randn(2, 23, 60, device=DEVICE, dtype=torch.float64)
    lower_bound = torch.rand(60, device=DEVICE, dtype=torch.float64).mul(0.9).requires_grad_() if bounded else None
    out, _, _ = layer(x, lower_bound=lower_bound)
    assert_close("out", _reference(layer, x, lower_bound), out, tol(torch.float64, 1e3))
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if bounded:  # layer 0 ignores its bound (0 by construction in the model): a zero gradient, not none
        assert (lower_bound.grad.abs().sum() > 0) == (layer_idx != 0)


def test_key_is_one_minus_forget_gate(monkeypatch):
    """The op receives g = lower-bounded logsigmoid(f) and k = 1 - exp(g), nothing else."""
    torch.manual_seed(0)
    layer = HGRN2Attention(hidden_size=32, expand_ratio=8, layer_idx=3).train()
    seen = {}

    def spy(q, k, v, g, **kwargs):
        seen.update(k=k, g=g)
        return torch.zeros_like(v), None

    monkeypatch.setattr(layer, "chunk_op", spy)
    x, lower_bound = torch.randn(1, 70, 32), torch.full((32,), 0.3)
    layer(x, lower_bound=lower_bound)
    f = layer.f_proj(x).unflatten(-1, (4, 8))
    expected_g = torch.log(0.3 + 0.7 * torch.sigmoid(f))
    torch.testing.assert_close(seen["g"], expected_g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["k"], 1 - seen["g"].exp(), rtol=0, atol=0)
    assert (seen["g"] >= torch.log(torch.tensor(0.3)) - 1e-6).all()  # the forget gate never drops below the bound


def test_heads_follow_fla():
    assert HGRN2Attention(hidden_size=64, expand_ratio=16).num_heads == 4
    assert HGRN2Attention(hidden_size=64, num_heads=8, expand_ratio=16).num_heads == 4  # expand_ratio wins, as in fla
    assert HGRN2Attention(hidden_size=64, num_heads=2, expand_ratio=None).expand_ratio == 32


def test_cache_decoding_continues_prefill():
    torch.manual_seed(0)
    layer = HGRN2Attention(hidden_size=32, expand_ratio=8, use_short_conv=True, layer_idx=1).eval()
    x, lower_bound = torch.randn(2, 80, 32, device=DEVICE), torch.full((32,), 0.2, device=DEVICE)
    with torch.no_grad():
        full, _, _ = layer(x, lower_bound=lower_bound)
        cache = FLACache()
        _, _, cache = layer(x[:, :77], past_key_values=cache, lower_bound=lower_bound)
        steps = [layer(x[:, t : t + 1], past_key_values=cache, lower_bound=lower_bound)[0] for t in range(77, 80)]
    assert_close("decode", full[:, 77:], torch.cat(steps, 1), tol(torch.float32, 20))


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="expand_ratio=128 is larger than hidden_size=64"):
        HGRN2Attention(hidden_size=64)
    with pytest.raises(ValueError, match="one of num_heads and expand_ratio must be given"):
        HGRN2Attention(hidden_size=64, expand_ratio=None)
    with pytest.raises(ValueError, match="value dim 72 is not a multiple of num_heads=5"):
        HGRN2Attention(hidden_size=72, expand_ratio=14)
    with pytest.raises(ValueError, match="mode='parallel' is not one of"):
        HGRN2Attention(mode="parallel", hidden_size=64, expand_ratio=16)
    layer = HGRN2Attention(hidden_size=64, expand_ratio=16, layer_idx=1)
    with pytest.raises(ValueError, match=r"lower_bound has shape \[32\], expected \[64\]"):
        layer(torch.randn(1, 5, 64, device=DEVICE), lower_bound=torch.zeros(32, device=DEVICE))
