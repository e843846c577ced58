"""MultiheadLatentAttention: the layer against a float64 re-statement of the maths (outputs and every gradient),
padded == varlen == one sequence at a time, cached decoding == the full forward (plain, windowed, left-padded),
and the compressed cache (``kv_lora_rank + qk_rope_head_dim`` numbers per token and layer)."""

from __future__ import annotations

import pytest
import torch

from fla.layers.mla import MultiheadLatentAttention
from fla.models import FLACache
from tests.harness import DEVICE, assert_close, tol

HIDDEN, HEADS, NOPE, ROPE, R = 40, 3, 10, 6, 20
CASES = {
    # v narrower than q/k (v zero-padded), low-rank q
    "q_lora_v12": dict(q_lora_rank=24, v_head_dim=12, window_size=None),
    # v wider than q/k (q, k zero-padded, explicit scale), full q projection, window
    "full_q_v20_window5": dict(q_lora_rank=None, v_head_dim=20, window_size=5),
    # equal widths, tiny window
    "q_lora_v16_window3": dict(q_lora_rank=8, v_head_dim=16, window_size=3),
}
case_param = pytest.mark.parametrize("case", CASES)


def make_layer(case: str, seed: int = 0, **overrides) -> MultiheadLatentAttention:
    torch.manual_seed(seed)
    fields = dict(
        hidden_size=HIDDEN,
        num_heads=HEADS,
        qk_nope_head_dim=NOPE,
        qk_rope_head_dim=ROPE,
        qk_head_dim=None,
        kv_lora_rank=R,
        rope_theta=500.0,
        layer_idx=0,
    )
    layer = MultiheadLatentAttention(**{**fields, **CASES[case], **overrides}).to(DEVICE)
    with torch.no_grad():  # non-trivial norm weights (they init to ones)
        for module in layer.modules():
            if type(module).__name__ == "RMSNorm":
                module.weight.uniform_(0.5, 1.5)
    return layer


# ---- the maths in float64 ----------------------------------------------------------------------------------------


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, pos, base):
    """Non-interleaved RoPE (halves rotated) of ``x [B, T, ..., D]`` at positions ``pos [B, T]``."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)
    angle = pos.double()[..., None] * inv  # [B, T, D/2]
    while angle.dim() < x.dim():
        angle = angle.unsqueeze(-2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def reference(layer: MultiheadLatentAttention, weights: dict, x: torch.Tensor) -> torch.Tensor:
    """``x [B, T, hidden] -> [B, T, hidden]`` from the definitions, in float64, positions ``0 .. T-1``."""
    B, T, _ = x.shape
    H, Dn, Dr, Dv = layer.num_heads, layer.qk_nope_head_dim, layer.qk_rope_head_dim, layer.v_head_dim
    eps = layer.kv_proj[1].eps
    if layer.q_lora_rank is None:
        q = x @ weights["q_proj.weight"].T
    else:
        q = _rms(x @ weights["q_proj.0.weight"].T, weights["q_proj.1.weight"], eps) @ weights["q_proj.2.weight"].T
    q = q.view(B, T, H, Dn + Dr)
    c_kv = _rms(x @ weights["kv_proj.0.weight"].T, weights["kv_proj.1.weight"], eps)  # [B, T, R]
    kv = (c_kv @ weights["kv_proj.2.weight"].T).view(B, T, H, Dn + Dv)
    pos = torch.arange(T, device=x.device).expand(B, T)
    k_rot = _rope(x @ weights["k_rope.weight"].T, pos, layer.rope_theta)  # [B, T, Dr]: one key for all heads
    q = torch.cat([q[..., :Dn], _rope(q[..., Dn:], pos, layer.rope_theta)], -1)
    k = torch.cat([kv[..., :Dn], k_rot[:, :, None].expand(B, T, H, Dr)], -1)
    v = kv[..., Dn:]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / (Dn + Dr) ** 0.5
    delta = torch.arange(T, device=x.device)[:, None] - torch.arange(T, device=x.device)[None, :]
    allowed = (delta >= 0) & (delta < (layer.window_size or T))
    p = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    o = torch.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, H * Dv)
    return o @ weights["o_proj.weight"].T


@case_param
def test_layer_matches_float64_maths_with_gradients(case):
    layer = make_layer(case)
    x = torch.randn(2, 37, HIDDEN, device=DEVICE, requires_grad=True)
    weights = {n: p.detach().double().requires_grad_() for n, p in layer.named_parameters()}
    x_ref = x.detach().double().requires_grad_()
    out = layer(x)[0]
    ref = reference(layer, weights, x_ref)
    assert_close("o", ref, out, tol(torch.float32, 10))
    dy = torch.randn_like(out)
    out.backward(dy)
    ref.backward(dy.double())
    assert_close("dx", x_ref.grad, x.grad, tol(torch.float32, 10))
    for name, p in layer.named_parameters():
        assert_close(f"d{name}", weights[name].grad, p.grad, tol(torch.float32, 10))


def test_parameter_names_and_shapes_are_fla060s():
    layer = make_layer("q_lora_v12")
    shapes = {n: list(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {
        "q_proj.0.weight": [24, HIDDEN],
        "q_proj.1.weight": [24],
        "q_proj.2.weight": [HEADS * (NOPE + ROPE), 24],
        "k_rope.weight": [ROPE, HIDDEN],
        "kv_proj.0.weight": [R, HIDDEN],
        "kv_proj.1.weight": [R],
        "kv_proj.2.weight": [HEADS * (NOPE + 12), R],
        "o_proj.weight": [HIDDEN, HEADS * 12],
    }
    assert layer.kv_proj[1].weight.dtype == torch.float32 and layer.kv_proj[1].eps == 1e-5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="qk_head_dim=20 != qk_nope_head_dim \\+ qk_rope_head_dim = 10 \\+ 6"):
        make_layer("q_lora_v12", qk_head_dim=20)
    with pytest.raises(ValueError, match="qk_rope_head_dim=5 must be even"):
        make_layer("q_lora_v12", qk_rope_head_dim=5)
    with pytest.raises(ValueError, match="kv_lora_rank must be a positive integer, got 0"):
        make_layer("q_lora_v12", kv_lora_rank=0)
    with pytest.raises(ValueError, match="window_size must be a positive integer or None, got 0"):
        make_layer("q_lora_v12", window_size=0)
    layer = make_layer("q_lora_v12")
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 5, 8\], expected \[B, T, 40\]"):
        layer(torch.randn(2, 5, 8, device=DEVICE))
    with pytest.raises(ValueError, match="cu_seqlens cannot be combined with a non-empty cache"):
        cache = FLACache()
        layer(torch.randn(1, 4, HIDDEN, device=DEVICE), past_key_values=cache)
        layer(torch.randn(1, 3, HIDDEN, device=DEVICE), past_key_values=cache, cu_seqlens=_cu([3]))


# ---- padding, varlen, cache ----------------------------------------------------------------------------------------


def _cu(lens):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)


@case_param
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_equals_varlen_equals_each_sequence(case, side):
    layer = make_layer(case)
    lens = [9, 1, 13, 4]
    seqs = [torch.randn(n, HIDDEN, device=DEVICE) for n in lens]
    T = max(lens)
    padded = torch.zeros(len(lens), T, HIDDEN, device=DEVICE)
    mask = torch.zeros(len(lens), T, dtype=torch.long, device=DEVICE)
    for b, s in enumerate(seqs):
        where = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        padded[b, where], mask[b, where] = s, 1
    with torch.no_grad():
        one_by_one = [layer(s[None])[0][0] for s in seqs]
        packed = layer(torch.cat(seqs)[None], cu_seqlens=_cu(lens))[0][0]
        out = layer(padded, attention_mask=mask)[0]
    assert_close("varlen", torch.cat(one_by_one), packed, tol(torch.float32, 10))
    assert_close("padded", torch.cat(one_by_one), out[mask.bool()], tol(torch.float32, 10))
    assert torch.equal(out[~mask.bool()], torch.zeros_like(out[~mask.bool()]))


@case_param
def test_cached_decoding_equals_full_forward(case):
    """Prefill 10 tokens, decode 5 one at a time, then a chunk of 8: the outputs of one full forward."""
    layer = make_layer(case)
    x = torch.randn(2, 23, HIDDEN, device=DEVICE)
    cache = FLACache()
    with torch.no_grad():
        full = layer(x)[0]
        steps = [layer(x[:, :10], past_key_values=cache)[0]]
        steps += [layer(x[:, t : t + 1], past_key_values=cache)[0] for t in range(10, 15)]
        steps.append(layer(x[:, 15:], past_key_values=cache)[0])
    assert_close("decoded", full, torch.cat(steps, 1), tol(torch.float32, 10))
    assert cache.get_seq_length(0) == 23


@case_param
def test_left_padded_cached_decoding_equals_each_sequence(case):
    layer = make_layer(case)
    lens = [12, 5]
    T, extra = max(lens), 4
    seqs = [torch.randn(n + extra, HIDDEN, device=DEVICE) for n in lens]
    prompt = torch.zeros(2, T, HIDDEN, device=DEVICE)
    mask = torch.zeros(2, T, dtype=torch.long, device=DEVICE)
    for b, (s, n) in enumerate(zip(seqs, lens, strict=True)):
        prompt[b, T - n :], mask[b, T - n :] = s[:n], 1
    cache = FLACache()
    with torch.no_grad():
        layer(prompt, attention_mask=mask, past_key_values=cache)
        steps = []
        for t in range(extra):
            mask = torch.cat([mask, mask.new_ones(2, 1)], 1)
            new = torch.stack([s[n + t] for s, n in zip(seqs, lens, strict=True)])[:, None]
            steps.append(layer(new, attention_mask=mask, past_key_values=cache)[0])
        alone = [layer(s[None])[0][0, n:] for s, n in zip(seqs, lens, strict=True)]
    assert_close("decoded", torch.stack(alone), torch.cat(steps, 1), tol(torch.float32, 10))


@pytest.mark.parametrize("case", ["q_lora_v12", "full_q_v20_window5"])
def test_cache_keeps_the_latent_and_the_rope_key_per_token(case):
    """The cache holds ``c_kv [B, L, R]`` and ``k_rot [B, L, Dr]``: ``R + Dr`` numbers per token, not the
    ``H * (Dn + Dr + Dv)`` of expanded keys and values; a sliding window keeps its last ``W`` tokens."""
    layer = make_layer(case)
    x = torch.randn(2, 11, HIDDEN, device=DEVICE)
    cache = FLACache()
    with torch.no_grad():
        layer(x[:, :9], past_key_values=cache)
        layer(x[:, 9:10], past_key_values=cache)
    c_kv, k_rot = cache[0]["attn_state"]
    kept = 10 if layer.window_size is None else layer.window_size
    assert list(c_kv.shape) == [2, kept, R] and list(k_rot.shape) == [2, kept, ROPE]
    per_token = (c_kv.numel() + k_rot.numel()) // (2 * kept)
    assert per_token == layer.cache_dim == R + ROPE
    assert per_token < HEADS * (NOPE + ROPE + layer.v_head_dim)
    # what is cached is the normalized latent and the rotated shared key of each token
    with torch.no_grad():
        latent, k_raw = layer.latent(x[:, :10])
        _, k_rope = layer._rope_q(layer.q_proj(x[:, :10]).view(2, 10, HEADS, -1), k_raw, max_seqlen=10)
    assert_close("c_kv", latent[:, 10 - kept :], c_kv, tol(torch.float32))
    assert_close("k_rot", k_rope[:, 10 - kept :], k_rot, tol(torch.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_backends_match_float64_maths(dtype):
    """fla 0.6.0's default widths (Dn + Dr = 192 > Dv = 128) on the GPU backends (flash-attn or torch's
    varlen_attn / SDPA): dense, packed varlen and cached decoding against the float64 formula."""
    torch.manual_seed(0)
    layer = MultiheadLatentAttention(hidden_size=256, num_heads=4, q_lora_rank=64, kv_lora_rank=128, layer_idx=0)
    layer = layer.to("cuda")
    x = torch.randn(2, 100, 256, device="cuda")
    weights = {n: p.detach().double() for n, p in layer.named_parameters()}
    ref = reference(layer, weights, x.double())
    layer = layer.to(dtype)
    for module in layer.modules():  # fla keeps the latent norms' weights in float32
        if type(module).__name__ == "RMSNorm":
            module.float()
    xs = x.to(dtype)
    cache = FLACache()
    with torch.no_grad():
        dense = layer(xs)[0]
        packed = layer(xs.flatten(0, 1)[None], cu_seqlens=_cu([100, 100]))[0].view(2, 100, 256)
        steps = [layer(xs[:, :90], past_key_values=cache)[0]]
        steps += [layer(xs[:, t : t + 1], past_key_values=cache)[0] for t in range(90, 100)]
    for name, out in (("dense", dense), ("varlen", packed), ("decoded", torch.cat(steps, 1))):
        assert_close(name, ref, out, tol(dtype, 2))
