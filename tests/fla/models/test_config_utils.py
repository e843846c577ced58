"""Hybrid ``attn`` spec validation, loss-flag checks and the base config (fla 0.6.0 fields per family)."""

import pytest
import torch
from transformers import CONFIG_MAPPING, AutoConfig
from transformers.configuration_utils import PreTrainedConfig

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


# ----------------------------------------------------------------------------- the base config
#
# fla 0.6.0's config fields and defaults, per family, written out (not derived from the code under
# test): a renamed, dropped, added or re-defaulted field fails here. The common block is what every
# family has; each family adds its own fields and its own defaults of shared ones.
_COMMON = {
    "hidden_size": 2048, "num_hidden_layers": 24, "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish",
    "max_position_embeddings": 2048, "norm_eps": 1e-6, "use_cache": True, "pad_token_id": None, "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": False, "initializer_range": 0.02, "fuse_norm": True, "fuse_swiglu": True,
    "fuse_cross_entropy": True, "fuse_linear_cross_entropy": False, "use_l2warp": False, "vocab_size": 32000,
    "attnres_block_size": None,
}  # fmt: skip
FLA060_FIELDS = {
    "gla": {
        **_COMMON, "attn": None, "attn_mode": "chunk", "expand_k": 0.5, "expand_v": 1.0, "num_heads": 4,
        "num_kv_heads": None, "feature_map": None, "use_short_conv": False, "conv_size": 4, "use_output_gate": True,
        "clamp_min": None, "elementwise_affine": True, "use_gk": True, "use_gv": False,
    },
    "retnet": {
        **_COMMON, "attn": None, "hidden_ratio": 2, "attn_mode": "chunk", "expand_k": 1.0, "expand_v": 2.0,
        "num_heads": 8, "num_kv_heads": None, "feature_map": None, "use_short_conv": False, "conv_size": 4,
        "use_output_gate": True, "elementwise_affine": True,
    },
    "delta_net": {
        **_COMMON, "attn": None, "attn_mode": "chunk", "expand_k": 1.0, "expand_v": 1.0, "use_gate": False,
        "use_short_conv": True, "allow_neg_eigval": False, "conv_size": 4, "use_beta": True, "use_output_norm": True,
        "num_heads": 16, "qk_norm": "l2", "qk_activation": "silu",
    },
    "gated_deltanet": {
        **_COMMON, "attn": None, "num_hidden_layers": 21, "attn_mode": "chunk", "expand_v": 2.0, "use_gate": True,
        "use_short_conv": True, "allow_neg_eigval": False, "conv_size": 4, "head_dim": 256, "num_heads": 6,
        "num_v_heads": None, "output_gate_activation": "swish",
    },
    "transformer": {
        **_COMMON, "num_heads": 32, "num_kv_heads": None, "qkv_bias": False, "qk_norm": False, "window_size": None,
        "rope_theta": 10000.0, "elementwise_affine": True,
    },
}  # fmt: skip


def _config_class(model_type):
    return CONFIG_MAPPING[model_type]  # fla's configs register on `import fla`


@pytest.mark.parametrize("model_type", list(FLA060_FIELDS))
def test_family_defaults_are_fla060s(model_type):
    cls = _config_class(model_type)
    out = cls().to_dict()
    assert out["model_type"] == cls.model_type == model_type
    generic = set(PreTrainedConfig().to_dict()) - set(_COMMON)  # transformers' own fields (return_dict, ...)
    fields = {k: v for k, v in out.items() if k not in generic and k != "model_type"}
    expected = FLA060_FIELDS[model_type]
    assert sorted(set(fields) - set(expected)) == [], "fields fla 0.6.0 does not have"
    assert sorted(set(expected) - set(fields)) == [], "fla 0.6.0 fields missing"
    assert {k: v for k, v in fields.items() if v != expected[k]} == {}, "defaults differing from fla 0.6.0"


@pytest.mark.parametrize("model_type", list(FLA060_FIELDS))
def test_family_config_round_trips_and_validates(model_type, tmp_path):
    cls = _config_class(model_type)
    config = cls(hidden_size=64, num_hidden_layers=3, num_heads=4, vocab_size=100, fuse_norm=False)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    same = {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"}
    assert type(loaded) is cls and same == {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
    assert (loaded.hidden_size, loaded.num_hidden_layers, loaded.vocab_size, loaded.fuse_norm) == (64, 3, 100, False)
    with pytest.raises(ValueError, match="fuse_cross_entropy and fuse_linear_cross_entropy are both true"):
        cls(fuse_linear_cross_entropy=True)
    with pytest.raises(ValueError, match="attnres_block_size=8 is not supported"):
        cls(attnres_block_size=8)
    with pytest.raises(TypeError):
        cls(2048)  # keyword-only: a positional value is an error, never a silently different field
    spec = {"layers": [2], "num_heads": 4}
    if cls.hybrid_attn:
        assert cls(num_hidden_layers=3, attn=spec).attn["num_kv_heads"] == 4, "attn is validated and normalized"
        with pytest.raises(ValueError, match=r"attn\['layers'\] has indices \[3\] outside \[0, 3\)"):
            cls(num_hidden_layers=3, attn={"layers": [3], "num_heads": 4})
    else:
        assert cls(attn=spec).attn == spec, "an extra attribute, kept as given (as before)"
