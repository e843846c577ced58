"""KimiDeltaAttention layer == its formula written out with the naive KDA recurrence (float64)."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import KimiDeltaAttention
from fla.ops.kda import naive_recurrent_kda
from tests.fla.layers.test_delta_net import causal_conv, l2, rms
from tests.harness import DEVICE, assert_close, tol

RATIO = tol(torch.float64, 1e3)


def reference(layer, x):
    """The layer's output from its weights, following fla 0.6.0's KimiDeltaAttention forward (GVA by index)."""
    H, HV, K, V = layer.num_heads, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        q, k = causal_conv(q, layer.q_conv1d, F.silu), causal_conv(k, layer.k_conv1d, F.silu)
        v = causal_conv(v, layer.v_conv1d, F.silu)
    else:
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    qk_head = torch.arange(HV, device=x.device) // (HV // H)  # value head j reads q/k head j // (HV / H)
    q, k = l2(q.unflatten(-1, (H, K)))[:, :, qk_head], l2(k.unflatten(-1, (H, K)))[:, :, qk_head]
    v = v.unflatten(-1, (HV, V))
    f = layer.f_proj(x).unflatten(-1, (HV, K)) + layer.dt_bias.view(HV, K)  # raw gate + bias per (head, channel)
    A = layer.A_log.exp()[:, None]
    if layer.lower_bound is None:
        g = -A * F.softplus(f)
    else:
        g = layer.lower_bound * torch.sigmoid(A * f)
    beta = layer.b_proj(x).sigmoid() * (2 if layer.allow_neg_eigval else 1)
    o, _ = naive_recurrent_kda(q, k, v, g, beta)
    o = rms(o, layer.o_norm.weight, layer.o_norm.eps) * layer.g_proj(x).unflatten(-1, (HV, V)).sigmoid()
    return layer.o_proj(o.flatten(-2))


CONFIGS = {
    "default": dict(),
    "gva_bounded_neg": dict(num_v_heads=4, allow_neg_eigval=True, safe_gate=True, lower_bound=-5.0, expand_v=1.5),
    "noconv": dict(use_short_conv=False),
}


def make(config):
    torch.manual_seed(0)
    layer = KimiDeltaAttention(hidden_size=60, head_dim=20, num_heads=2, **CONFIGS[config])
    layer = layer.to(DEVICE, torch.float64)
    for p in layer.parameters():  # norms start at ones and biases at zero: make every weight matter
        p.data.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize(
    "config, training",
    [("default", True), ("gva_bounded_neg", False), ("noconv", True)],
    ids=["chunk", "recurrent_gva", "chunk_noconv"],
)
def test_layer_matches_formula(config, training):
    # training: the chunk op; eval on 13 tokens: the recurrent op
    layer = make(config).train(training)
    x = torch.randn(2, 13, 60, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", reference(layer, x), out, RATIO)
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_parameter_shapes_and_init():
    layer = KimiDeltaAttention(hidden_size=64, head_dim=16, num_heads=2, num_v_heads=4, expand_v=2)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes["f_proj.0.weight"] == (32, 64) and shapes["f_proj.1.weight"] == (4 * 16, 32)
    assert shapes["g_proj.0.weight"] == (32, 64) and shapes["g_proj.1.bias"] == (4 * 32,)
    assert shapes["A_log"] == (4,) and shapes["dt_bias"] == (4 * 16,) and shapes["b_proj.weight"] == (4, 64)
    A = layer.A_log.exp()
    assert bool((A >= 1).all() and (A <= 16).all())
    dt = F.softplus(layer.dt_bias)
    assert bool((dt >= 1e-4 - 1e-7).all() and (dt <= 0.1 + 1e-6).all())
    bounded = KimiDeltaAttention(hidden_size=64, head_dim=16, num_heads=2, safe_gate=True, lower_bound=-5.0)
    assert bool((bounded.A_log == 0).all())
    with pytest.raises(ValueError, match=r"safe_gate=True needs lower_bound in \[-5, 0\), got None"):
        KimiDeltaAttention(hidden_size=64, head_dim=16, num_heads=2, safe_gate=True)
    with pytest.raises(ValueError, match="num_v_heads=3 is not a multiple of num_heads=2"):
        KimiDeltaAttention(hidden_size=64, head_dim=16, num_heads=2, num_v_heads=3)
