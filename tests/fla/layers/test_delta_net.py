"""DeltaNet layer == its formula written out with the naive delta-rule recurrence (float64)."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import DeltaNet
from fla.models import FLACache
from fla.ops.delta_rule import naive_recurrent_delta_rule
from tests.harness import DEVICE, assert_close, tol, using

RATIO = tol(torch.float64, 1e3)


def causal_conv(x, conv, activation):
    """Depthwise causal convolution of ``x [B, T, D]`` with a ShortConvolution's weights, then ``activation``."""
    W = conv.weight.shape[-1]
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), conv.weight, conv.bias, groups=x.shape[-1]).transpose(1, 2)
    return activation(y)


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def l2(x):
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def reference(layer, x):
    """The layer's output from its weights, following fla 0.6.0's DeltaNet forward."""
    H, K, V = layer.num_heads, layer.head_k_dim, layer.head_v_dim
    qk_act = {"silu": F.silu, "relu": F.relu, "elu": lambda t: F.elu(t) + 1, "identity": lambda t: t}
    act = qk_act[layer.qk_activation]
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        conv_act = F.silu if layer.qk_activation == "silu" else (lambda t: t)
        q, k = causal_conv(q, layer.q_conv1d, conv_act), causal_conv(k, layer.k_conv1d, conv_act)
        v = causal_conv(v, layer.v_conv1d, F.silu)
    else:
        v = F.silu(v)
        if layer.qk_activation == "silu":
            q, k = F.silu(q), F.silu(k)
    q, k, v = q.unflatten(-1, (H, K)), k.unflatten(-1, (H, K)), v.unflatten(-1, (H, V))
    if layer.qk_activation != "silu":
        q, k = act(q), act(k)
    if layer.qk_norm == "l2":
        q, k = l2(q), l2(k)
    else:
        q, k = q / q.abs().sum(-1, keepdim=True).clamp_min(1e-6), k / k.abs().sum(-1, keepdim=True).clamp_min(1e-6)
    beta = layer.b_proj(x).sigmoid() if layer.use_beta else torch.ones_like(q[..., 0])
    if layer.allow_neg_eigval:
        beta = 2 * beta
    o, _ = naive_recurrent_delta_rule(q, k, v, beta)
    norm = layer.o_norm
    if layer.use_gate:
        o = rms(o, norm.weight, norm.eps) * F.silu(layer.g_proj(x).unflatten(-1, (H, V)))
    else:
        o = rms(o, norm.weight, norm.eps)
    return layer.o_proj(o.flatten(-2))


CONFIGS = {
    "default": dict(),
    "gate_relu_sum_neg": dict(use_gate=True, qk_activation="relu", qk_norm="sum", allow_neg_eigval=True, expand_v=2),
    "noconv_elu_nobeta": dict(use_short_conv=False, qk_activation="elu", use_beta=False),
    "noconv_silu": dict(use_short_conv=False, conv_size=3),
    "conv_identity": dict(qk_activation="identity", conv_size=3, conv_bias=True),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(config, training):
    torch.manual_seed(0)
    layer = DeltaNet(hidden_size=60, num_heads=2, **CONFIGS[config]).to(DEVICE, torch.float64).train(training)
    for p in layer.parameters():  # norms start at ones and conv biases at zero: make every weight matter
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 23, 60, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", reference(layer, x), out, RATIO)
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", ["default", "noconv_elu_nobeta"])
def test_prefill_then_decode_with_cache_equals_full_forward(config):
    """Chunk prefill (> 64 tokens) into the cache, then 3 single-token fused_recurrent steps."""
    torch.manual_seed(0)
    layer = DeltaNet(hidden_size=60, num_heads=2, layer_idx=0, **CONFIGS[config]).to(DEVICE, torch.float64).eval()
    x = torch.randn(2, 70, 60, device=DEVICE, dtype=torch.float64)
    with torch.no_grad():
        full, _, _ = layer(x)
        cache = FLACache()
        outs = [layer(x[:, :67], past_key_values=cache)[0]]
        for t in range(67, 70):
            outs.append(layer(x[:, t : t + 1], past_key_values=cache)[0])
    assert cache.get_seq_length(0) == 70
    assert_close("decoded", full, torch.cat(outs, 1), RATIO)


def test_varlen_equals_each_sequence():
    torch.manual_seed(0)
    layer = DeltaNet(hidden_size=60, num_heads=2).to(DEVICE, torch.float64).train()
    lens = [9, 1, 14]
    x = torch.randn(1, sum(lens), 60, device=DEVICE, dtype=torch.float64)
    cu = torch.tensor([0, 9, 10, 24], dtype=torch.int32, device=DEVICE)
    out, _, _ = layer(x, cu_seqlens=cu)
    for b in range(3):
        ref, _, _ = layer(x[:, cu[b] : cu[b + 1]])
        assert_close(f"seq {b}", ref, out[:, cu[b] : cu[b + 1]], RATIO)


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="qk_activation='tanh' is not one of"):
        DeltaNet(hidden_size=64, qk_activation="tanh")
    with pytest.raises(ValueError, match="qk_norm='none' is not one of"):
        DeltaNet(hidden_size=64, qk_norm="none")
    with pytest.raises(ValueError, match="mode='fused_chunk' is not one of"):
        DeltaNet(hidden_size=64, mode="fused_chunk")
    with pytest.raises(ValueError, match=r"hidden_size \* expand_v = 32.5 is not an integer"):
        DeltaNet(hidden_size=65, expand_k=1, expand_v=0.5, num_heads=1)
    with pytest.raises(ValueError, match="key dim 64 is not a multiple of num_heads=3"):
        DeltaNet(hidden_size=64, num_heads=3)
    layer = DeltaNet(hidden_size=64, num_heads=4, d_model=64)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 5, 32\], expected \[B, T, 64\]"):
        layer(torch.randn(2, 5, 32, device=DEVICE))
    with pytest.raises(ValueError, match="layer_idx is required"):
        layer(torch.randn(2, 5, 64, device=DEVICE), past_key_values=FLACache())


@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_triton_backend_matches_formula(training):
    """The Triton ops (the interpreter on CPU) inside the layer, float32, against the float64 formula."""
    torch.manual_seed(0)
    layer = DeltaNet(hidden_size=60, num_heads=2, use_gate=True).to(DEVICE).train(training)
    x = torch.randn(2, 23, 60, device=DEVICE)
    with using("triton"):
        out, _, _ = layer(x)
    ref = reference(layer.double(), x.double())
    assert_close("out", ref, out, tol(torch.float32, 20))
