"""RodimusAttention and SlidingWindowSharedKeyAttention == their formulas written out in float64; padded ==
varlen == each sequence; decoding from the cache == the full forward."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import RodimusAttention, SlidingWindowSharedKeyAttention
from fla.models import FLACache
from tests.harness import DEVICE, assert_close, tol, using


def _causal_conv(x, weight, bias):
    y = F.conv1d(F.pad(x.transpose(1, 2), (weight.shape[-1] - 1, 0)), weight, bias, groups=x.shape[-1])
    return y.transpose(1, 2)


def _rodimus_reference(layer, h):
    """The module docstring's maths, one token at a time (float64)."""
    x, z = layer.up_proj(h), layer.gate_proj(h)
    s = F.silu(_causal_conv(x, layer.short_conv.weight, layer.short_conv.bias)) if layer.use_short_conv else x
    q, k = layer.q_proj(s), layer.k_proj(s)
    r = layer.i_gate_proj[0](x)
    v = torch.sigmoid(layer.i_gate_proj[1](r)) * x
    g = F.softplus(layer.g_gate_proj(s))
    tau = torch.sigmoid(layer.tau_gate_proj(s))
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(layer.k_norm_eps) * g**tau
    decay = torch.exp(-g * tau)
    B, T, K = q.shape
    state = torch.zeros(B, K, v.shape[-1], dtype=h.dtype, device=h.device)
    outs = []
    for t in range(T):
        state = decay[:, t, :, None] * state + k[:, t, :, None] * v[:, t, None, :]
        outs.append(torch.einsum("bk,bkv->bv", q[:, t] * K**-0.5, state))
    y = torch.stack(outs, 1) + s * layer.residual_weight
    y = y * F.silu(z)
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + layer.activation_norm.eps) * layer.activation_norm.weight
    return layer.down_proj(y)


def _rodimus(seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = RodimusAttention(**{"hidden_size": 36, "expand_ratio": 12, "layer_idx": 0, **kwargs})
    with torch.no_grad():  # fla's init ranges for the gate biases, spread wider: strong and weak decays
        layer.g_gate_proj.bias.uniform_(-4, 2)
        layer.tau_gate_proj.bias.uniform_(-2, 2)
        layer.residual_weight.uniform_(0.5, 1.5)
    return layer.to(DEVICE)


@pytest.mark.parametrize("use_short_conv", [True, False], ids=["conv", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_rodimus_matches_formula(use_short_conv, training):
    layer = _rodimus(use_short_conv=use_short_conv).double().train(training)
    assert (layer.d_inner, layer.mem_size, layer.input_gate_low_rank) == (72, 12, 16)
    h = torch.randn(2, 21, 36, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(h)
    assert_close("out", _rodimus_reference(layer, h), out, tol(torch.float64, 1e3))
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_rodimus_fused_recurrent_mode_matches_chunk():
    layer = _rodimus().train()
    h = torch.randn(2, 70, 36, device=DEVICE)
    chunk = layer(h)[0]
    layer.mode = "fused_recurrent"
    assert_close("fused_recurrent", chunk, layer(h)[0], tol(torch.float32, 20))


def _padded(h, lens, side):
    B, T = len(lens), max(lens)
    x = torch.zeros(B, T, h[0].shape[-1], device=DEVICE)
    mask = torch.zeros(B, T, dtype=torch.long, device=DEVICE)
    for b, (seq, n) in enumerate(zip(h, lens)):
        sl = slice(0, n) if side == "right" else slice(T - n, T)
        x[b, sl], mask[b, sl] = seq, 1
    return x, mask


def _check_padded_varlen(layer, side):
    lens = [9, 1, 17]
    seqs = [torch.randn(n, layer.hidden_size, device=DEVICE) for n in lens]
    each = [layer(s[None])[0][0] for s in seqs]
    x, mask = _padded(seqs, lens, side)
    padded = layer(x, attention_mask=mask)[0]
    cu = torch.tensor([0, 9, 10, 27], dtype=torch.int32, device=DEVICE)
    varlen = layer(torch.cat(seqs)[None], cu_seqlens=cu)[0][0]
    for b in range(len(lens)):
        real = padded[b][mask[b].bool()]
        assert_close(f"padded[{b}]", each[b], real, tol(torch.float32, 20))
        assert_close(f"varlen[{b}]", each[b], varlen[cu[b] : cu[b + 1]], tol(torch.float32, 20))
    assert (padded[~mask.bool()] == 0).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_rodimus_padded_equals_varlen_equals_each_sequence(side):
    _check_padded_varlen(_rodimus(use_short_conv=True).train(), side)


@pytest.mark.parametrize("use_short_conv", [True, False], ids=["conv", "plain"])
def test_rodimus_decode_equals_full_forward(use_short_conv):
    layer = _rodimus(use_short_conv=use_short_conv).eval()
    h = torch.randn(2, 80, 36, device=DEVICE)
    with torch.no_grad():
        full = layer(h)[0]
        cache = FLACache()
        prefill, _, cache = layer(h[:, :75], past_key_values=cache)
        steps = [layer(h[:, t : t + 1], past_key_values=cache)[0] for t in range(75, 78)]
        chunk2 = layer(h[:, 78:], past_key_values=cache)[0]
    assert_close("prefill", full[:, :75], prefill, tol(torch.float32, 20))
    assert_close("decode", full[:, 75:], torch.cat([*steps, chunk2], 1), tol(torch.float32, 20))
    state = cache[0]
    assert state["recurrent_state"].shape == (2, 1, 12, 72)
    assert (state["conv_state"] is not None) == use_short_conv


def test_rodimus_errors_name_the_problem():
    with pytest.raises(ValueError, match="mode='parallel' is not one of"):
        RodimusAttention(mode="parallel", hidden_size=32)
    with pytest.raises(ValueError, match="block_type='mamba' is not one of"):
        RodimusAttention(block_type="mamba", hidden_size=32)
    with pytest.raises(ValueError, match="expand_ratio must be a positive int, got 0"):
        RodimusAttention(hidden_size=32, expand_ratio=0)
    with pytest.raises(ValueError, match="input_gate_low_rank must be 'auto' or a positive int, got 'x'"):
        RodimusAttention(hidden_size=32, input_gate_low_rank="x")
    layer = RodimusAttention(hidden_size=32, expand_ratio=8)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[1, 5, 30\], expected \[B, T, 32\]"):
        layer(torch.randn(1, 5, 30))
    assert RodimusAttention(hidden_size=2048).input_gate_low_rank == 32  # "auto": max(hidden // 64, 16)


# ---- SW-SKA ---------------------------------------------------------------------------------------------


def _rope(x, pos, base):
    D = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64, device=x.device) / D)
    ang = pos[:, None].double() * inv[None]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1)[:, None], torch.cat([ang.sin(), ang.sin()], -1)[:, None]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], -1) * sin.to(x.dtype)


def _ska_reference(layer, h):
    """Softmax attention, one shared key head, window W (a query sees itself and the W - 1 keys before it)."""
    B, T, _ = h.shape
    H, D, W = layer.num_heads, layer.head_dim, layer.window_size
    q = layer.q_proj(h).view(B, T, H, D)
    k = F.linear(h, layer.k_proj.weight, layer.k_proj.bias).view(B, T, 1, D)  # ONE key head
    v = layer.v_proj(h).view(B, T, H, D)
    if layer.qk_norm:
        q, k = layer.q_norm(q), layer.k_norm(k)
    pos = torch.arange(T, device=h.device)
    q, k = _rope(q, pos, layer.rope_theta), _rope(k, pos, layer.rope_theta)
    scores = torch.einsum("bthd,bsd->bhts", q, k[:, :, 0]) * D**-0.5
    delta = pos[:, None] - pos[None, :]
    allowed = (delta >= 0) & (delta < (W if W is not None else T + 1))
    p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    o = torch.einsum("bhts,bshd->bthd", p, v)
    return layer.o_proj(o.reshape(B, T, H * D))


def _ska(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SlidingWindowSharedKeyAttention(
        **{"hidden_size": 48, "num_heads": 3, "window_size": 5, "layer_idx": 0, **kwargs}
    ).to(DEVICE)


@pytest.mark.parametrize("qk_norm, qkv_bias, window", [(False, False, 5), (True, True, 5), (False, False, None)])
def test_ska_matches_formula(qk_norm, qkv_bias, window):
    layer = _ska(qk_norm=qk_norm, qkv_bias=qkv_bias, window_size=window).double()
    assert (layer.k_proj.weight.shape, layer.v_proj.weight.shape) == ((16, 48), (48, 48))
    h = torch.randn(2, 13, 48, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(h)
    assert_close("out", _ska_reference(layer, h), out, tol(torch.float64, 1e3))
    out.sum().backward()
    assert layer.k_proj.weight.grad is not None and layer.k_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_ska_padded_equals_varlen_equals_each_sequence(side):
    _check_padded_varlen(_ska(), side)


def test_ska_decode_equals_full_forward():
    layer = _ska().eval()
    h = torch.randn(2, 20, 48, device=DEVICE)
    with torch.no_grad():
        full = layer(h)[0]
        cache = FLACache()
        _, _, cache = layer(h[:, :12], past_key_values=cache)
        steps = [layer(h[:, t : t + 1], past_key_values=cache)[0] for t in range(12, 15)]
        rest = layer(h[:, 15:], past_key_values=cache)[0]  # several tokens after a window-trimmed cache
    assert_close("decode", full[:, 12:], torch.cat([*steps, rest], 1), tol(torch.float32, 20))
    assert cache[0]["attn_state"][0].shape[1] == 5  # only the window is kept


def test_ska_errors_name_the_problem():
    with pytest.raises(ValueError, match="hidden_size=50 is not a multiple of num_heads=3"):
        SlidingWindowSharedKeyAttention(hidden_size=50, num_heads=3)
    with pytest.raises(ValueError, match="num_heads must be a positive int, got 0"):
        SlidingWindowSharedKeyAttention(hidden_size=48, num_heads=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", ["rodimus", "ska"])
def test_triton_matches_torch_with_cache(kind, dtype):
    """The Triton kernels (the interpreter on CPU) under each layer: output, gradients, one decoding step."""
    layer = (_rodimus(use_short_conv=True) if kind == "rodimus" else _ska(qk_norm=True)).to(dtype)
    x = torch.randn(2, 21, layer.hidden_size, device=DEVICE, dtype=dtype)
    results = []
    for backend in ("torch", "triton"):
        with using(backend):
            layer.train().zero_grad()
            out, _, _ = layer(x)
            out.float().square().sum().backward()
            with torch.no_grad():
                cache = FLACache()
                layer.eval()(x[:, :-1], past_key_values=cache)
                step, _, _ = layer(x[:, -1:], past_key_values=cache)
            results.append((out.detach(), step, [p.grad.clone() for p in layer.parameters()]))
    (ref, ref_step, ref_grads), (out, step, grads) = results
    assert_close("out", ref, out, tol(dtype, 20))
    assert_close("decode step", ref_step, step, tol(dtype, 20))
    for (name, _), a, b in zip(layer.named_parameters(), ref_grads, grads):
        assert_close(f"d{name}", a, b, tol(dtype, 50))
