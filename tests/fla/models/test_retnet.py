"""RetNet specifics; the model-level checks every family passes are in test_conformance.py."""

import torch

from fla.ops.retention import naive_recurrent_retention
from tests.fla.models.families import BY_TYPE, RATIO, ids
from tests.harness import DEVICE, assert_close

RETNET = BY_TYPE["retnet"]


def test_short_conv_is_ignored_like_fla060():
    layer = RETNET.model(use_short_conv=True).model.layers[0].attn
    assert not layer.use_short_conv and not any("conv" in name for name, _ in layer.named_parameters())


def test_layer_is_rotary_retention_with_output_gate():
    """The layer output == o_proj(rmsnorm(retention(rope(q), rope(k), v)) * swish(g)) from its own weights."""
    layer = RETNET.model().model.layers[0].attn.eval()
    x = torch.randn(2, 11, 72, device=DEVICE, dtype=torch.float64)
    layer = layer.double()
    with torch.no_grad():
        out, _, _ = layer(x)
        q = layer.q_proj(x).unflatten(-1, (4, 18))
        k = layer.k_proj(x).unflatten(-1, (4, 18))
        v = layer.v_proj(x).unflatten(-1, (4, 36))
        q, k = layer.rotary(q, k)
        o, _ = naive_recurrent_retention(q, k, v)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.g_norm_swish_gate.eps)
        o = o * layer.g_norm_swish_gate.weight
        ref = layer.o_proj(o.flatten(-2) * torch.nn.functional.silu(layer.g_proj(x)))
    assert_close("layer", ref, out, RATIO)


def test_decode_positions_continue_per_row():
    """After a left-padded prefill, each row's rotary positions continue from its own real length."""
    model = RETNET.model().eval()
    x = ids(1, 7)
    with torch.no_grad():
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long, device=DEVICE), x[:, :6]], 1)
        mask = (torch.arange(9, device=DEVICE) >= 3).long()[None]
        cache = model(padded, attention_mask=mask, use_cache=True).past_key_values
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
        step = model(x[:, 6:], attention_mask=mask, past_key_values=cache).logits[0, -1]
        assert_close("step", model(x).logits[0, -1], step, RATIO)
