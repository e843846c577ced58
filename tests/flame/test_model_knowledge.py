"""Model knowledge comes from the models: FLOPs per token and TP plans, with the wave-1 numbers unchanged.

The FLOPs table was recorded with flame's former per-``model_type`` tables (``LINEAR_FAMILIES`` /
``DELTA_FAMILIES`` in flame.metrics) before the rule moved to ``fla.models.flops``; the TP plans
below are flame's former ``TP_PLANS`` (flame.parallelize), which now live on the model classes.
"""

import ast
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import fla  # noqa: F401 - registers the fla models
from fla.models.tp_plan import TPPlan, TPRegion
from flame.config import ConfigError
from flame.metrics import flops_per_token
from flame.model import count_params
from flame.parallelize import check_tp_supported, plan_from_base_model_tp_plan, tensor_parallel_plan

ROOT = Path(__file__).resolve().parents[2]
SEQ_LENS = (64, 2048, 8192)

# config: (parameters, input-embedding parameters, FLOPs/token at seq_len 64, 2048, 8192)
FLOPS = {
    "delta_net_1.3B": (1365677056, 65536000, 7932966912, 7932966912, 7932966912),
    "delta_net_340M": (374362112, 32768000, 2115624960, 2115624960, 2115624960),
    "delta_net_cpu": (395616, 131072, 1759296, 1759296, 1759296),
    "delta_net_tiny": (8721088, 4096000, 28143744, 28143744, 28143744),
    "gated_deltanet_1.3B": (1387348732, 65536000, 8178602472, 8178602472, 8178602472),
    "gated_deltanet_340M": (379888124, 32768000, 2157038568, 2157038568, 2157038568),
    "gated_deltanet_cpu": (412072, 131072, 1888752, 1888752, 1888752),
    "gated_deltanet_tiny": (8786760, 4096000, 28660656, 28660656, 28660656),
    "gla_1.3B": (1365514240, 65536000, 7979175936, 7979175936, 7979175936),
    "gla_340M": (374475776, 32768000, 2102151168, 2102151168, 2102151168),
    "gla_cpu": (390016, 131072, 1639680, 1639680, 1639680),
    "gla_tiny": (8723264, 4096000, 27960192, 27960192, 27960192),
    "llama_tiny": (90432, 8192, 591744, 3639168, 13076352),
    "retnet_1.3B": (1351727104, 65536000, 8075759616, 8075759616, 8075759616),
    "retnet_340M": (380171264, 32768000, 2263726080, 2263726080, 2263726080),
    "retnet_cpu": (414080, 131072, 1894656, 1894656, 1894656),
    "transformer_1.3B": (1364297728, 65536000, 7830319104, 9000529920, 12624408576),
    "transformer_340M": (373867520, 32768000, 2065471488, 2650576896, 4462516224),
    "transformer_cpu": (385344, 131072, 1623936, 4671360, 14108544),
    "transformer_tiny": (8684160, 4096000, 27725568, 33820416, 52694784),
}
# Hybrids and windows: (config, overrides) -> the same five numbers.
VARIANTS = {
    "gla hybrid": (
        "gla_tiny",
        {"attn": {"layers": [1], "num_heads": 4}},
        (8720096, 4096000, 27941184, 30988608, 40425792),
    ),
    "gdn hybrid window": (
        "gated_deltanet_tiny",
        {"attn": {"layers": [0], "num_heads": 8, "window_size": 512}},
        (8751844, 4096000, 28291416, 28979544, 28979544),
    ),
    "transformer window": ("transformer_tiny", {"window_size": 1024}, (8684160, 4096000, 27725568, 30674688, 30674688)),
}


def load(name: str, overrides: dict | None = None):
    raw = json.loads((ROOT / "configs" / f"{name}.json").read_text())
    config = AutoConfig.for_model(**{**raw, **(overrides or {})})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return config, model


def test_every_recorded_config_still_exists():
    # the table is wave 1's record (configs added later, e.g. new families' tiny configs, are not in it)
    assert set(FLOPS) <= {p.stem for p in (ROOT / "configs").glob("*.json")}


@pytest.mark.parametrize(
    "name, overrides, expected",
    [(n, None, v) for n, v in FLOPS.items()] + list(VARIANTS.values()),
    ids=list(FLOPS) + list(VARIANTS),
)
def test_flops_per_token_unchanged(name, overrides, expected):
    config, model = load(name, overrides)
    n, emb = count_params(model)
    assert (n, emb) == expected[:2]
    assert [flops_per_token(config, n, emb, s) for s in SEQ_LENS] == list(expected[2:])  # flame's path
    if hasattr(model, "token_mixer"):  # fla models answer it themselves
        assert [model.flops_per_token(s) for s in SEQ_LENS] == list(expected[2:])


# ----------------------------------------------------------------------------- TP plans

_CONVS = ("q_conv1d", "k_conv1d", "v_conv1d")
_DIMS = ("key_dim", "value_dim", "key_dim_per_group", "value_dim_per_group")
_MLP = {"col": ("gate_proj", "up_proj"), "row": ("down_proj",)}
# flame's TP_PLANS before the move (embed / head / regions per model type).
WAVE1_PLANS = {
    "llama": (
        "model.embed_tokens",
        "lm_head",
        {"self_attn": {"col": ("q_proj", "k_proj", "v_proj"), "row": ("o_proj",)}, "mlp": _MLP},
    ),
    "transformer": (
        "model.embeddings",
        "lm_head",
        {
            "attn": {
                "col": ("q_proj", "k_proj", "v_proj"),
                "row": ("o_proj",),
                "divide": ("num_heads", "num_kv_heads"),
            },
            "mlp": _MLP,
        },
    ),
    "gla": (
        "model.embeddings",
        "lm_head",
        {
            "attn": {
                "col": ("q_proj", "k_proj", "v_proj", "g_proj", "gk_proj.1"),
                "row": ("o_proj",),
                "shard": _CONVS,
                "divide": ("num_heads", "num_kv_heads", *_DIMS),
            },
            "mlp": _MLP,
        },
    ),
    "retnet": (
        "model.embeddings",
        "lm_head",
        {
            "attn": {
                "col": ("q_proj", "k_proj", "v_proj", "g_proj"),
                "row": ("o_proj",),
                "shard": _CONVS,
                "divide": ("num_heads", "num_kv_heads", *_DIMS),
                "rank_offset": {"head_offset": "num_heads"},
            },
            "mlp": _MLP,
        },
    ),
    "delta_net": (
        "model.embeddings",
        "lm_head",
        {
            "attn": {
                "col": ("q_proj", "k_proj", "v_proj", "b_proj", "g_proj"),
                "row": ("o_proj",),
                "shard": _CONVS,
                "divide": ("num_heads", "num_kv_heads", *_DIMS),
            },
            "mlp": _MLP,
        },
    ),
    "gated_deltanet": (
        "model.embeddings",
        "lm_head",
        {
            "attn": {
                "col": ("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj"),
                "row": ("o_proj",),
                "shard": (*_CONVS, "A_log", "dt_bias"),
                "divide": ("num_heads", "num_v_heads", *_DIMS),
            },
            "mlp": _MLP,
        },
    ),
}
CONFIG_OF = {"llama": "llama_tiny", "retnet": "retnet_cpu"}


@pytest.mark.parametrize("family", list(WAVE1_PLANS))
def test_tp_plans_are_the_models_and_unchanged(family):
    config, model = load(CONFIG_OF.get(family, f"{family}_tiny"))
    plan = tensor_parallel_plan(config)
    embed, head, regions = WAVE1_PLANS[family]
    expected = {name: TPRegion(**spec) for name, spec in regions.items()}
    assert isinstance(plan, TPPlan) and dict(plan.regions) == expected and not plan.unsupported
    if family == "llama":  # translated from transformers' base_model_tp_plan; embed / head found on the model
        assert (plan.embed, plan.head) == ("", "")
        assert model.get_submodule(embed) is model.get_input_embeddings()
        assert model.get_submodule(head) is model.get_output_embeddings()
    else:
        assert (plan.embed, plan.head) == (embed, head)
        assert type(model).tensor_parallel_plan is plan
    check_tp_supported(config, 2)


def test_base_model_tp_plan_translation_refuses_what_flame_cannot_apply():
    assert plan_from_base_model_tp_plan(None) is None
    assert (
        plan_from_base_model_tp_plan(
            {"layers.*.self_attn.q_proj": "colwise_rep", "layers.*.self_attn.o_proj": "rowwise"}
        )
        is None
    )
    assert plan_from_base_model_tp_plan({"layers.*.mlp.up_proj": "colwise"}) is None  # no row-parallel output
    assert plan_from_base_model_tp_plan({"embed_tokens": "rowwise"}) is None  # outside the blocks


def test_a_model_without_a_plan_is_a_one_line_config_error(tmp_path):
    from fla.models.gla.modeling_gla import GLAForCausalLM

    config, _ = load("gla_tiny")
    plan = GLAForCausalLM.tensor_parallel_plan
    GLAForCausalLM.tensor_parallel_plan = None
    try:
        with pytest.raises(
            ConfigError, match=r"^parallelism.tensor_parallel_degree = 2: TP not supported for gla \("
        ) as info:
            check_tp_supported(config, 2)
        assert "\n" not in str(info.value)
        check_tp_supported(config, 1)
    finally:
        GLAForCausalLM.tensor_parallel_plan = plan


# ----------------------------------------------------------------------------- flame names no family


def test_flame_names_no_model_family():
    """No registered model_type appears in flame's code as a string (docstrings and comments aside)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    families = set(CONFIG_MAPPING.keys())
    found = []
    for path in sorted((ROOT / "flame").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in families:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "flame names model families:\n" + "\n".join(found)
