"""GatedDeltaNet layer == its formula written out with the naive gated delta-rule recurrence (float64)."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import GatedDeltaNet
from fla.layers.gated_deltanet import gdn_gate
from fla.models import FLACache
from fla.ops.gated_delta_rule import naive_recurrent_gated_delta_rule
from tests.fla.layers.test_delta_net import causal_conv, l2, rms
from tests.harness import DEVICE, assert_close, tol, using

RATIO = tol(torch.float64, 1e3)


def reference(layer, x):
    """The layer's output from its weights, following fla 0.6.0's GatedDeltaNet forward (GVA by index)."""
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
    g = -layer.A_log.exp() * F.softplus(layer.a_proj(x) + layer.dt_bias)
    beta = layer.b_proj(x).sigmoid() * (2 if layer.allow_neg_eigval else 1)
    o, _ = naive_recurrent_gated_delta_rule(q, k, v, g, beta)
    norm = layer.o_norm
    o = rms(o, norm.weight, norm.eps)
    if layer.use_gate:
        gate = layer.g_proj(x).unflatten(-1, (HV, V))
        o = o * (gate.sigmoid() if norm.activation == "sigmoid" else F.silu(gate))
    return layer.o_proj(o.flatten(-2))


CONFIGS = {
    "default": dict(),
    "gva_neg_sigmoid": dict(num_v_heads=4, allow_neg_eigval=True, output_gate_activation="sigmoid", expand_v=1.5),
    "noconv_nogate": dict(use_short_conv=False, use_gate=False),
    "gva_conv_bias": dict(num_v_heads=6, conv_size=3, conv_bias=True),
}


def make(config, **kw):
    torch.manual_seed(0)
    layer = GatedDeltaNet(hidden_size=60, head_dim=20, num_heads=2, **CONFIGS[config], **kw)
    layer = layer.to(DEVICE, torch.float64)
    for p in layer.parameters():  # norms start at ones and conv biases at zero: make every weight matter
        p.data.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(config, training):
    layer = make(config).train(training)
    x = torch.randn(2, 23, 60, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", reference(layer, x), out, RATIO)
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_gate_is_mamba2_style_log_decay():
    a = torch.randn(3, 5, 4, dtype=torch.float64)
    A_log, dt_bias = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    ref = -A_log.exp() * torch.log1p((a + dt_bias).exp())
    g = gdn_gate(a, A_log, dt_bias)
    assert g.dtype == torch.float64 and bool((g <= 0).all())
    assert_close("g", ref, g, tol(torch.float64, 10))
    g16 = gdn_gate(a.half(), A_log.half(), dt_bias.half())
    assert g16.dtype == torch.float32, "half inputs: the gate is computed in float32"
    assert_close("g (half inputs)", ref, g16, tol(torch.float16, 10))


@pytest.mark.parametrize("config", ["default", "gva_neg_sigmoid"])
def test_prefill_then_decode_with_cache_equals_full_forward(config):
    """Chunk prefill (> 64 tokens) into the cache, then 3 single-token fused_recurrent steps."""
    layer = make(config, layer_idx=0).eval()
    x = torch.randn(2, 70, 60, device=DEVICE, dtype=torch.float64)
    with torch.no_grad():
        full, _, _ = layer(x)
        cache = FLACache()
        outs = [layer(x[:, :67], past_key_values=cache)[0]]
        for t in range(67, 70):
            outs.append(layer(x[:, t : t + 1], past_key_values=cache)[0])
    assert cache[0]["recurrent_state"].shape == (2, layer.num_v_heads, 20, layer.head_v_dim)
    assert_close("decoded", full, torch.cat(outs, 1), RATIO)


@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_triton_backend_matches_formula(training):
    """The Triton ops (the interpreter on CPU) inside the layer, float32, against the float64 formula."""
    layer = make("gva_neg_sigmoid").float().train(training)
    x = torch.randn(2, 23, 60, device=DEVICE)
    with using("triton"):
        out, _, _ = layer(x)
    assert_close("out", reference(layer.double(), x.double()), out, tol(torch.float32, 20))


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_v_heads=3 is not a multiple of num_heads=2"):
        GatedDeltaNet(hidden_size=64, head_dim=16, num_heads=2, num_v_heads=3)
    with pytest.raises(ValueError, match=r"head_dim \* expand_v = 16 \* 1.1 is not an integer"):
        GatedDeltaNet(hidden_size=64, head_dim=16, num_heads=2, expand_v=1.1)
    with pytest.raises(ValueError, match="output_gate_activation='relu' is not one of"):
        GatedDeltaNet(hidden_size=64, head_dim=16, num_heads=2, output_gate_activation="relu")
    with pytest.raises(ValueError, match="mode='fused_chunk' is not one of"):
        GatedDeltaNet(hidden_size=64, head_dim=16, num_heads=2, mode="fused_chunk")
    layer = GatedDeltaNet(hidden_size=64, head_dim=16, num_heads=2)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 5, 32\], expected \[B, T, 64\]"):
        layer(torch.randn(2, 5, 32, device=DEVICE))
    with pytest.raises(ValueError, match="layer_idx is required"):
        layer(torch.randn(2, 5, 64, device=DEVICE), past_key_values=FLACache())
