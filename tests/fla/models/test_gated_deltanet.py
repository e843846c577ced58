"""Gated DeltaNet specifics; the model-level checks every family passes are in test_conformance.py."""

import math

import pytest
import torch

from tests.fla.models.families import BY_TYPE, ids
from tests.harness import DEVICE

GDN = BY_TYPE["gated_deltanet"]


def test_gate_parameters_init_and_reach_the_output():
    """A_log / dt_bias: Mamba 2 ranges at init, loaded values kept, and both change the logits."""
    model = GDN.model(num_v_heads=4).eval()
    layer = model.model.layers[0].attn
    A = layer.A_log.exp()
    dt = torch.nn.functional.softplus(layer.dt_bias)
    assert layer.A_log.shape == (4,) and bool(((A >= 1) & (A <= 16)).all()), A
    assert bool(((dt >= 1e-4 * 0.999) & (dt <= 0.1 * 1.001)).all()), dt
    x = ids(1, 20)
    with torch.no_grad():
        base = model(x).logits
        for param in (layer.A_log, layer.dt_bias):
            saved = param.clone()
            param.add_(1.0)
            assert not torch.allclose(base, model(x).logits, atol=1e-5)
            param.copy_(saved)
        assert torch.equal(base, model(x).logits)


def test_init_weights_keeps_loaded_gate_parameters():
    model = GDN.model()
    layer = model.model.layers[0].attn
    with torch.no_grad():
        layer.A_log.fill_(math.log(3.0))
    layer.A_log._is_hf_initialized = True
    layer.reset_parameters()
    assert torch.equal(layer.A_log, torch.full_like(layer.A_log, math.log(3.0)))
    with torch.no_grad():
        before = layer.dt_bias.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.dt_bias), "dt_bias (not loaded) is re-initialized"


def test_config_errors():
    with pytest.raises(ValueError, match="output_gate_activation='relu' is not one of"):
        GDN.config(output_gate_activation="relu")
    with pytest.raises(ValueError, match=r"head_dim \* expand_v = 18 \* 1.1 is not an integer"):
        GDN.model(expand_v=1.1)
    with pytest.raises(ValueError, match=r"mode='parallel' is not one of \('chunk', 'fused_recurrent'\)"):
        GDN.model(attn_mode="parallel")


def test_decode_state_is_per_value_head():
    """The cached recurrent state is [B, num_v_heads, head_dim, head_v_dim] float32."""
    model = GDN.model(num_v_heads=4).eval()
    with torch.no_grad():
        cache = model(ids(2, 5), use_cache=True).past_key_values
    state = cache[0]["recurrent_state"]
    assert state.shape == (2, 4, 18, 36) and state.dtype == torch.float32 and state.device == torch.device(DEVICE)
