"""HGRN specifics (fla 0.6.0 config defaults, the layer's maths written out, lower bounds); the model-level
checks every family passes are in test_conformance.py."""

import torch
import torch.nn.functional as F

from fla.layers.hgrn import HGRNAttention
from fla.models import HGRNConfig
from tests.fla.models.families import BY_TYPE
from tests.harness import assert_close, tol

HGRN = BY_TYPE["hgrn"]


def test_config_defaults_are_fla060():
    config = HGRNConfig()
    expected = dict(
        attn_mode="fused_recurrent", hidden_size=2048, num_hidden_layers=24, expand_ratio=1, use_short_conv=False,
        conv_size=4, use_lower_bound=True, max_position_embeddings=2048, hidden_ratio=4, intermediate_size=None,
        hidden_act="swish", elementwise_affine=True, norm_eps=1e-6, attn=None, use_cache=True, pad_token_id=None,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02, fuse_norm=True,
        fuse_swiglu=True, fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False,
        vocab_size=32000, attnres_block_size=None,
    )  # fmt: skip
    assert {k: getattr(config, k) for k in expected} == expected


def _written_out(layer, x, lower_bound):
    """fla 0.6.0's HGRNAttention.forward, step by step in float64 (no cache, no convs)."""
    W = {n: p.detach().double() for n, p in layer.named_parameters()}
    x = x.double()
    i, f, gate = x @ W["i_proj.weight"].T, x @ W["f_proj.weight"].T, x @ W["g_proj.weight"].T
    f = F.logsigmoid(f)
    if lower_bound is not None and layer.layer_idx > 0:
        lb = lower_bound.double()
        f = torch.logaddexp(lb.log(), torch.log1p(-lb) + f)
    i = F.silu(i) * (1 - f.exp())
    h, outs = torch.zeros(x.shape[0], i.shape[-1], dtype=torch.float64), []
    for t in range(x.shape[1]):
        h = f[:, t].exp() * h + i[:, t]
        outs.append(h)
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + layer.g_norm.eps) * W["g_norm.weight"] * F.silu(gate)
    return o @ W["o_proj.weight"].T


def test_layer_matches_fla060_maths():
    torch.manual_seed(0)
    for layer_idx, expand_ratio in ((0, 1), (2, 2)):
        layer = HGRNAttention(mode="chunk", hidden_size=24, expand_ratio=expand_ratio, layer_idx=layer_idx)
        with torch.no_grad():
            layer.g_norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 37, 24)
        lb = torch.rand(24 * expand_ratio) * 0.9
        for bound in (None, lb):
            out, _, _ = layer.train()(x, lower_bound=bound)
            assert_close("out", _written_out(layer, x, bound), out, tol(torch.float32, 20))


def test_lower_bounds_shape_and_layer_zero():
    model = HGRN.model(num_hidden_layers=3, expand_ratio=2)
    assert model.model.lower_bounds.shape == (3, 144)
    bounds = model.model.layer_lower_bounds()
    torch.testing.assert_close(bounds[:, 0], torch.tensor([0.0, 1 / 3, 2 / 3]))
    assert not hasattr(HGRN.model(use_lower_bound=False).model, "lower_bounds")


def test_float32_forget_gate_under_a_bf16_input():
    """Under CUDA autocast the layer's ``exp()`` runs in float32 while the input projection is bf16: the input gate
    ``silu(i) * (1 - exp(f))`` must come back in the input's dtype (a 340M run under torch.compile on an H100 failed
    in swiglu). CPU autocast keeps exp in bf16, so the float32 forget gate is made here by the f_proj hook."""
    torch.manual_seed(0)
    layer = HGRNAttention(mode="chunk", hidden_size=24, layer_idx=1).to(torch.bfloat16)
    layer.f_proj.register_forward_hook(lambda module, args, out: out.float())
    x = torch.randn(2, 37, 24, dtype=torch.bfloat16)
    out, _, _ = layer.train()(x, lower_bound=torch.rand(24) * 0.9)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
