"""LinearAttention layer == its formula written out as masked quadratic attention (float64), with every
feature map fla 0.6.0's layer accepts, normalized or not; its cache and its errors."""

import pytest
import torch

from fla.layers import LinearAttention
from fla.layers.linear_attn import FEATURE_MAPS, feature_dim
from fla.models import FLACache
from tests.harness import DEVICE, assert_close, tol, using

H, D = 2, 50  # heads, hidden size: head_k_dim = head_v_dim = 25


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _reference(layer, x, groups):
    """``phi(q) phi(k)^T`` causally masked, times v, over sqrt(d_phi) (normalized: over its row sums)."""
    q = layer.feature_map_q(layer.q_proj(x).unflatten(-1, (H, -1)))
    k = layer.feature_map_k(layer.k_proj(x).unflatten(-1, (-1, layer.head_k_dim))).repeat_interleave(groups, 2)
    v = layer.v_proj(x).unflatten(-1, (-1, layer.head_v_dim)).repeat_interleave(groups, 2)
    if layer.norm_q:
        q = q / (q.sum(-1, keepdim=True) + 1e-4)
    if layer.norm_k:
        k = k / (k.sum(-1, keepdim=True) + 1e-4)
    T = x.shape[1]
    scores = torch.einsum("bthk,bshk->bhts", q, k) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), 0)
    o = torch.einsum("bhts,bshv->bthv", scores, v)
    if layer.do_feature_map_norm:
        o = o / (scores.sum(-1).transpose(1, 2)[..., None] + 1e-10)
    norm = layer.norm
    return layer.o_proj(_rms(o, norm.weight, norm.eps).flatten(-2))


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(feature_map, training):
    torch.manual_seed(0)
    normalize = feature_map in ("hedgehog", "elu", "dpfp")  # positive features: the normalizer stays away from 0
    layer = LinearAttention(
        hidden_size=D, num_heads=H, num_kv_heads=1, feature_map=feature_map, do_feature_map_norm=normalize,
        norm_k=feature_map == "relu",
    )  # fmt: skip
    layer = layer.to(DEVICE, torch.float64).train(training)
    x = torch.randn(2, 23, D, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", _reference(layer, x, groups=2), out, tol(torch.float64, 1e3))
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert layer.feature_dim == feature_dim(feature_map, 25) == layer.feature_map_q(x.new_zeros(25)).shape[-1]


@pytest.mark.parametrize("normalize", [False, True])
def test_cache_continues_the_sequence(normalize):
    """Prefill (chunk) then decoding (recurrent) == one pass; the normalized state is the pair (S, z)."""
    torch.manual_seed(0)
    layer = LinearAttention(hidden_size=D, num_heads=H, feature_map="hedgehog", do_feature_map_norm=normalize)
    layer = layer.to(DEVICE, torch.float64).eval().requires_grad_(False)
    layer.layer_idx = 0
    x = torch.randn(2, 80, D, device=DEVICE, dtype=torch.float64)
    full, _, _ = layer(x)
    cache = FLACache()
    parts = [layer(x[:, :70], past_key_values=cache)[0]]
    parts += [layer(x[:, t : t + 1], past_key_values=cache)[0] for t in range(70, 80)]
    assert_close("decoded", full, torch.cat(parts, 1), tol(torch.float64, 1e3))
    state = cache[0]["recurrent_state"]
    if normalize:
        S, z = state
        assert S.shape == (2, H, 50, 25) and z.shape == (2, 1, H, 50)
    else:
        assert isinstance(state, torch.Tensor) and state.shape == (2, H, 50, 25)


def test_tied_feature_map_is_one_module():
    layer = LinearAttention(hidden_size=D, num_heads=H, feature_map="hedgehog", tie_feature_map_qk=True)
    assert layer.feature_map_q is layer.feature_map_k
    untied = LinearAttention(hidden_size=D, num_heads=H, feature_map="hedgehog")
    assert untied.feature_map_q is not untied.feature_map_k


def test_output_norm_identity_has_no_norm_weight():
    layer = LinearAttention(hidden_size=D, num_heads=H, output_norm="identity")
    assert isinstance(layer.norm, torch.nn.Identity) and "norm.weight" not in dict(layer.named_parameters())


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"feature_map='taylor' is not one of \('hedgehog'"):
        LinearAttention(hidden_size=D, num_heads=H, feature_map="taylor")
    with pytest.raises(ValueError, match="output_norm='layernorm' is not one of"):
        LinearAttention(hidden_size=D, num_heads=H, output_norm="layernorm")
    with pytest.raises(ValueError, match="mode='parallel' is not one of"):
        LinearAttention(hidden_size=D, num_heads=H, mode="parallel")
    with pytest.raises(ValueError, match="value dim 50 is not a multiple of num_heads=4"):
        LinearAttention(hidden_size=D, num_heads=4, expand_k=0.48)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_torch_normalized_with_cache(dtype):
    """The Triton kernels (the interpreter on CPU) under the normalized layer: output, gradients, decoding."""
    torch.manual_seed(0)
    layer = LinearAttention(hidden_size=32, num_heads=2, num_kv_heads=1, feature_map="hedgehog", layer_idx=0)
    layer.do_feature_map_norm = True
    layer = layer.to(DEVICE, dtype)
    x = torch.randn(2, 21, 32, device=DEVICE, dtype=dtype)
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
