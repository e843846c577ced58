"""Weights that do not fit the model are one line before anything is built (issue 32, item 6).

An HF folder of one family with another family's ``model.config``; ``initial_load_path`` without
``model.config`` (the folder's config is used); a DCP ``step-0`` of other shapes; a safetensors shard
missing from an HF folder's index (named, instead of ``Missing key ... embeddings.weight``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flame.config import ConfigError, FlameConfigManager
from flame.model import load_model_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def hf_folder(tmp_path: Path, family: str, name: str = "hf", **save) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla  # noqa: F401

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(CONFIGS / f"{family}_cpu.json")))
    out = tmp_path / name
    model.save_pretrained(str(out), **save)
    return out


def job(tmp_path: Path, *args: str):
    base = ["--checkpoint.enable", "true", "--job.dump_folder", str(tmp_path / "run")]
    return FlameConfigManager().parse_args([*base, *args])


def one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text, text
    return text


def test_hf_folder_of_another_family(tmp_path):
    folder = hf_folder(tmp_path, "transformer")
    with pytest.raises(
        ConfigError, match=r"checkpoint\.initial_load_path = .*holds a transformer model .* is a gla"
    ) as info:
        job(tmp_path, "--model.config", str(CONFIGS / "gla_cpu.json"), "--checkpoint.initial_load_path", str(folder))
    one_line(info)


def test_hf_folder_gives_the_config_when_none_is_given(tmp_path):
    folder = hf_folder(tmp_path, "gla")
    parsed = job(tmp_path, "--checkpoint.initial_load_path", str(folder))
    assert parsed.model.config == str(folder)
    config = load_model_config(parsed)
    assert config.model_type == "gla"


def test_hf_folder_of_other_shapes(tmp_path):
    folder = hf_folder(tmp_path, "gla")
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({**json.loads((CONFIGS / "gla_cpu.json").read_text()), "intermediate_size": 96}))
    parsed = job(tmp_path, "--model.config", str(wide), "--checkpoint.initial_load_path", str(folder))
    with pytest.raises(
        ConfigError,
        match=r"checkpoint\.initial_load_path = .*mlp\.down_proj\.weight has shape \[64, 256\] in .* but \[64, 96\]",
    ) as info:
        load_model_config(parsed)
    one_line(info)


def test_dcp_step0_of_other_shapes(tmp_path):
    from flame.convert.hf_to_dcp import hf_to_dcp

    folder = hf_folder(tmp_path, "transformer")
    hf_to_dcp(str(folder), str(tmp_path / "run" / "checkpoint" / "step-0"))
    parsed = job(tmp_path, "--model.config", str(CONFIGS / "gla_cpu.json"))
    with pytest.raises(ConfigError, match=r"model\.config = .*gla_cpu\.json.*step-0 does not match the model") as info:
        load_model_config(parsed)
    one_line(info)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads((CONFIGS / "transformer_cpu.json").read_text()), "vocab_size": 1000}))
    with pytest.raises(ConfigError, match=r"lm_head\.weight has shape \[\d+, 64\] in .*step-0 but \[1000, 64\]"):
        load_model_config(job(tmp_path, "--model.config", str(other)))
    assert load_model_config(job(tmp_path, "--model.config", str(CONFIGS / "transformer_cpu.json")))


def test_missing_safetensors_shard_is_named(tmp_path):
    from flame.convert.common import ConvertError
    from flame.convert.hf_to_dcp import hf_weight_names

    folder = hf_folder(tmp_path, "gla", max_shard_size="200KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    (folder / shards[0]).unlink()
    with pytest.raises(ConvertError, match=f"the shard {shards[0]} is missing"):
        hf_weight_names(folder)
    parsed = job(tmp_path, "--checkpoint.initial_load_path", str(folder))
    with pytest.raises(
        ConfigError, match=rf"checkpoint\.initial_load_path = .*the shard {shards[0]} is missing"
    ) as info:
        load_model_config(parsed)
    one_line(info)
