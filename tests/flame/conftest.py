"""Shared fixtures of the flame tests: a small offline corpus + tokenizer made once per session."""

from pathlib import Path

import pytest

from flame.tools import sample_data


@pytest.fixture(scope="session")
def sample_module():
    """:mod:`flame.tools.sample_data` (the generator's helpers: ``make_sample_data``, ``generate_documents``, ...)."""
    return sample_data


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
