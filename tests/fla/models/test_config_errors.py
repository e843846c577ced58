"""A family config that cannot build a model fails when it is constructed, with one line naming field and values.

Parametrized over the five families: each bad config raises ``ValueError`` at construction (before
any model is built), and a grid of small configs shows the converse, that every config a family's
``check_fields`` accepts builds its model (so the config checks and the layers agree).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import AutoModelForCausalLM

from fla.models import DeltaNetConfig, GatedDeltaNetConfig, GLAConfig, RetNetConfig, TransformerConfig
from fla.models.config_utils import FLAConfig

SMALL = dict(hidden_size=64, num_hidden_layers=2, vocab_size=128)

BAD = {
    "gla": (
        GLAConfig,
        [
            # key dim 100 * 0.5 = 50 is not a multiple of 4 heads: fails at config construction
            (dict(hidden_size=100, num_heads=4), "GLAConfig: key dim 50 is not a multiple of num_heads=4"),
            (dict(num_heads=3), "key dim 32 is not a multiple of num_heads=3"),
            (dict(expand_v=0.3), r"hidden_size \* expand_v = 64 \* 0.3 = 19.2 is not an integer"),
            (dict(num_heads=4, num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
            (dict(attn_mode="parallel_scan"), "attn_mode='parallel_scan' is not one of"),
            (dict(feature_map="nope"), "feature_map='nope' is not null or an activation name"),
            (dict(hidden_act="gelu"), "hidden_act='gelu' is not one of"),
        ],
    ),
    "retnet": (
        RetNetConfig,
        [
            (dict(num_heads=3), "RetNetConfig: key dim 64 is not a multiple of num_heads=3"),
            (dict(hidden_size=1024, num_heads=2), "key head size .* = 512 exceeds 256"),
            (dict(num_heads=4, num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
            (dict(attn_mode="bogus"), "attn_mode='bogus' is not one of"),
        ],
    ),
    "delta_net": (
        DeltaNetConfig,
        [
            (dict(num_heads=5), "DeltaNetConfig: key dim 64 is not a multiple of num_heads=5"),
            (dict(attn_mode="fused_chunk"), "attn_mode='fused_chunk' is not one of"),
            (dict(qk_activation="tanh"), "qk_activation='tanh' is not one of"),
            (dict(qk_norm="l1"), "qk_norm='l1' is not one of"),
            (dict(num_heads=0), "num_heads=0 must be a positive integer"),
        ],
    ),
    "gated_deltanet": (
        GatedDeltaNetConfig,
        [
            (dict(num_heads=2, num_v_heads=3), "GatedDeltaNetConfig: num_v_heads=3 is not a multiple of num_heads=2"),
            (dict(head_dim=15, expand_v=0.5), r"head_dim \* expand_v = 15 \* 0.5 is not an integer"),
            (dict(head_dim=0), "head_dim=0 must be a positive integer"),
            (dict(output_gate_activation="relu"), "output_gate_activation='relu' is not one of"),
            (dict(attn_mode="parallel"), "attn_mode='parallel' is not one of"),
        ],
    ),
    "transformer": (
        TransformerConfig,
        [
            (dict(num_heads=5), "TransformerConfig: hidden_size=64 is not a multiple of num_heads=5"),
            (dict(num_heads=4, num_kv_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
            (dict(window_size=0), "window_size=0 must be a positive integer or null"),
        ],
    ),
}

CASES = [(family, fields, match) for family, (_, cases) in BAD.items() for fields, match in cases]


@pytest.mark.parametrize("family, fields, match", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_config_fails_at_construction(family, fields, match):
    cls = BAD[family][0]
    with pytest.raises(ValueError, match=match) as info:
        cls(**{**SMALL, **fields})
    assert "\n" not in str(info.value), "one line"


@pytest.mark.parametrize("family", list(BAD))
def test_shared_fields_are_checked_in_every_family(family):
    cls = BAD[family][0]
    with pytest.raises(ValueError, match="hidden_size=0 must be a positive integer"):
        cls(**{**SMALL, "hidden_size": 0})
    with pytest.raises(ValueError, match="hidden_act='relu' is not one of"):
        cls(**{**SMALL, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="fuse_cross_entropy and fuse_linear_cross_entropy are both true"):
        cls(**{**SMALL, "fuse_cross_entropy": True, "fuse_linear_cross_entropy": True})


@pytest.mark.parametrize("family", list(BAD))
def test_check_fields_after_a_change(family):
    """A field changed after construction (e.g. flame's model.overrides) is checked by the same hook."""
    cls, cases = BAD[family]
    config = cls(**SMALL)
    config.check_fields()
    fields, match = cases[0]
    for key, value in fields.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=match):
        config.check_fields()


def test_every_family_fills_the_hook():
    """Every registered fla family overrides ``check_fields`` (so its mixer's constraints are checked)."""
    families = {cls.model_type: cls for cls in FLAConfig.__subclasses__()}
    assert set(BAD) <= set(families)
    for model_type, cls in families.items():
        assert cls.check_fields is not FLAConfig.check_fields, f"{model_type}: no check_fields of its own"


GRID = {
    "gla": dict(num_heads=(1, 2, 3, 4), expand_k=(0.5, 0.75, 1.0), num_kv_heads=(None, 2)),
    "retnet": dict(num_heads=(1, 2, 3, 4), expand_k=(1.0, 0.75), expand_v=(2.0, 1.5), num_kv_heads=(None, 2)),
    "delta_net": dict(num_heads=(1, 3, 4, 8), expand_k=(1.0, 0.75), expand_v=(1.0, 0.5)),
    "gated_deltanet": dict(num_heads=(1, 2, 3), head_dim=(8, 15, 16), num_v_heads=(None, 2, 4), expand_v=(1.0, 1.5)),
    "transformer": dict(num_heads=(1, 3, 4), num_kv_heads=(None, 1, 2, 4)),
}


@pytest.mark.parametrize("family", list(GRID))
def test_accepted_configs_build(family):
    """Each config of the grid either fails at construction or builds its model (on the meta device)."""
    cls = BAD[family][0]
    names = list(GRID[family])
    accepted = rejected = 0
    for values in itertools.product(*GRID[family].values()):
        fields = {**SMALL, "num_hidden_layers": 1, **dict(zip(names, values))}
        try:
            config = cls(**fields)
        except ValueError:
            rejected += 1
            continue
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
        accepted += 1
    assert accepted and rejected, (accepted, rejected)
