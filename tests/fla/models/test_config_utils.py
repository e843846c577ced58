"""Hybrid ``attn`` spec validation and loss-flag checks."""

import pytest
import torch

from fla.models.config_utils import get_attn_spec, validate_attn_spec, validate_loss_config
from fla.models.modeling_utils import build_attention


def test_defaults_and_lookup():
    spec = {"layers": [3, 1], "num_heads": 4}
    out = validate_attn_spec(spec, num_hidden_layers=4, hidden_size=64)
    assert spec == {"layers": [3, 1], "num_heads": 4}, "the input is not modified"
    assert out == {
        "layers": [1, 3],
        "num_heads": 4,
        "num_kv_heads": 4,
        "window_size": None,
        "rope_theta": 10000.0,
        "qkv_bias": False,
        "qk_norm": False,
    }
    assert get_attn_spec(out, 1) is out and get_attn_spec(out, 0) is None and get_attn_spec(None, 1) is None
    many = validate_attn_spec([{"layers": [0], "num_heads": 2}, {"layers": [2], "num_heads": 4, "window_size": 8}], 3)
    assert get_attn_spec(many, 2)["window_size"] == 8 and get_attn_spec(many, 1) is None


@pytest.mark.parametrize(
    "attn, match",
    [
        ({"num_heads": 4}, "missing the required key 'layers'"),
        ({"layers": [0]}, "missing the required key 'num_heads'"),
        ({"layers": [0, 4], "num_heads": 4}, r"indices \[4\] outside \[0, 4\)"),
        ({"layers": [1, 1], "num_heads": 4}, "lists a layer twice"),
        ({"layers": "0", "num_heads": 4}, "must be a list of layer indices"),
        ({"layers": [True], "num_heads": 4}, "must be a list of layer indices"),
        ({"layers": [0], "num_heads": 0}, r"\['num_heads'\] must be a positive int, got 0"),
        ({"layers": [0], "num_heads": 4, "num_kv_heads": 3}, "num_heads=4 is not a multiple of num_kv_heads=3"),
        ({"layers": [0], "num_heads": 5}, "hidden_size=64 is not a multiple of num_heads=5"),
        ({"layers": [0], "num_heads": 4, "window_size": 0}, "window_size'] must be a positive int or null, got 0"),
        ({"layers": [0], "num_heads": 4, "rope_theta": -1.0}, "rope_theta'] must be a positive finite number"),
        ({"layers": [0], "num_heads": 4, "qk_norm": 1}, r"\['qk_norm'\] must be true or false"),
        ({"layers": [0], "num_heads": 4, "num_kv_head": 2}, r"unknown keys \['num_kv_head'\]"),
        ([{"layers": [0, 2], "num_heads": 4}, {"layers": [2], "num_heads": 4}], "both claim layer 2"),
        ("attention", "must be null, a dict or a list of dicts"),
    ],
)
def test_bad_specs_name_the_field(attn, match):
    with pytest.raises(ValueError, match=match):
        validate_attn_spec(attn, num_hidden_layers=4, hidden_size=64)


def test_loss_flags():
    validate_loss_config(True, False)
    validate_loss_config(False, True)
    with pytest.raises(ValueError, match="fuse_cross_entropy and fuse_linear_cross_entropy are both true"):
        validate_loss_config(True, True)


def test_build_attention_from_spec():
    class Cfg:
        hidden_size, max_position_embeddings = 64, 128
        attn = validate_attn_spec({"layers": [1], "num_heads": 4, "num_kv_heads": 2, "qk_norm": True}, 2, 64)

    assert build_attention(Cfg, 0) is None
    layer = build_attention(Cfg, 1)
    assert (layer.num_heads, layer.num_kv_heads, layer.layer_idx, layer.qk_norm) == (4, 2, 1, True)
    assert layer(torch.randn(1, 3, 64))[0].shape == (1, 3, 64)
