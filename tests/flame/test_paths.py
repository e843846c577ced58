"""A local path with a typo fails at once with one line; only real hub ids are asked of the hub (issue 32, item 8).

Before, ``configs/nope.json``, ``data/nope`` (a tokenizer or a dataset) were tried as hub ids: 25-50 s of
retries offline. Here the hub entry points are replaced by functions that fail the test when called.
"""

from __future__ import annotations

import pytest

from flame.config import ConfigError, FlameConfigManager
from flame.paths import looks_local


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with ``configs/`` and ``data/`` folders (as in the repository after train.sh)."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "data" / "sample").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks the hub (transformers' Auto classes, datasets.load_dataset)."""
    import datasets
    from transformers import AutoConfig, AutoTokenizer

    def asked(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args[:1]}")

    monkeypatch.setattr(AutoConfig, "from_pretrained", asked)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", asked)
    monkeypatch.setattr(datasets, "load_dataset", asked)


def test_looks_local(workdir):
    for name in ("configs/nope.json", "nope.json", "data/nope", "./x", "/abs/x", "~/x", "a/b/c", "x.jsonl"):
        assert looks_local(name), name
    for name in ("gpt2", "fla-hub/transformer-1.3B-100B", "Qwen/Qwen2.5-0.5B", "HuggingFaceFW/fineweb-edu"):
        assert not looks_local(name), name


def test_model_config_typo_fails_at_once(workdir, no_hub):
    from flame.model import load_model_config

    job = FlameConfigManager().parse_args(["--model.config", "configs/nope.json"])
    with pytest.raises(ConfigError, match=r"model\.config = 'configs/nope\.json': no such file or folder") as info:
        load_model_config(job)
    assert "\n" not in str(info.value)


def test_tokenizer_and_data_typos_fail_at_once(workdir, no_hub):
    from flame.data import build_tokenizer
    from flame.data.config import DataConfig
    from flame.data.sources import open_source

    with pytest.raises(FileNotFoundError, match=r"tokenizer not found: data/nope is not a tokenizer folder \(no such"):
        build_tokenizer("data/nope")
    with pytest.raises(FileNotFoundError, match=r"data source not found: data/nope \(no such file or folder"):
        open_source(DataConfig(dataset="data/nope").sources()[0], 1)
    with pytest.raises(FileNotFoundError, match=r"did you mean sample\?"):
        open_source(DataConfig(dataset="data/sampel").sources()[0], 1)


def test_converters_typos_fail_at_once(workdir, no_hub):
    from flame.convert.common import ConvertError, load_config
    from flame.convert.hf_to_dcp import hf_to_dcp

    with pytest.raises(ConvertError, match="model config configs/nope.json: no such file or folder"):
        load_config("configs/nope.json")
    with pytest.raises(ConvertError, match="data/nope: no such file or folder"):
        hf_to_dcp("data/nope", str(workdir / "out"))


def test_hub_ids_still_go_to_the_hub(workdir, monkeypatch):
    """A name that is not written as a path is still looked up (here: the hub stand-in answers)."""
    import datasets

    from flame.data.config import DataConfig
    from flame.data.sources import open_source

    seen = []

    def fake(name, *args, **kwargs):
        seen.append(name)
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake)
    with pytest.raises(ValueError, match="tried the Hugging Face hub"):
        open_source(DataConfig(dataset="someorg/somedata").sources()[0], 1)
    assert seen == ["someorg/somedata"]
