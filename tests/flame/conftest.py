"""Shared fixtures of the flame tests: a small offline corpus + tokenizer made once per session."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_sample_data_module():
    """``scripts/make_sample_data.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sample_module():
    return load_sample_data_module()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory, sample_module) -> Path:
    """``<dir>/data`` (4 train jsonl shards of 1200 lessons + a validation file) and ``<dir>/tokenizer``."""
    out = tmp_path_factory.mktemp("sample")
    sample_module.make_sample_data(out, num_docs=1200, vocab_size=512, seed=0, num_shards=4, valid_docs=300)
    return out


@pytest.fixture(scope="session")
def tokenizer(sample_dir):
    from flame.data import build_tokenizer

    return build_tokenizer(str(sample_dir / "tokenizer"))
