"""flame.tools.sample_data: deterministic, consistent (learnable) text and a loadable BPE tokenizer."""

import json
import re
import time

import pytest


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(tmp_path, sample_module):
    kw = dict(num_docs=120, vocab_size=300, num_shards=3, valid_docs=10)
    sample_module.make_sample_data(tmp_path / "a", seed=3, **kw)
    sample_module.make_sample_data(tmp_path / "b", seed=3, **kw)
    sample_module.make_sample_data(tmp_path / "c", seed=4, **kw)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert "tokenizer/tokenizer.json" in a and "data/train-00002-of-00003.jsonl" in a
    assert a == b, "same seed, different bytes"
    assert a["data/train-00000-of-00003.jsonl"] != c["data/train-00000-of-00003.jsonl"]


def test_tokenizer_folder_loads_with_special_tokens(sample_dir, tokenizer):
    assert len(tokenizer) == 512
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    text = json.loads((sample_dir / "data" / "validation-00000-of-00001.jsonl").read_text().splitlines()[0])["text"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2  # BPE merges, round trip


def test_corpus_is_consistent(sample_dir):
    """What a model can learn must be right: every sum, difference, product and count in the corpus."""
    text = "\n".join(p.read_text() for p in sorted((sample_dir / "data").glob("*.jsonl")))
    checks = 0
    for a, op, b, c in re.findall(r"(\d+) (plus|minus|times) (\d+) equals (\d+)", text):
        a, b, c = int(a), int(b), int(c)
        assert c == {"plus": a + b, "minus": a - b, "times": a * b}[op]
        checks += 1
    for a, b, seq in re.findall(r"Count from (\d+) to (\d+): ([\d ]+)\.", text):
        assert seq.split() == [str(i) for i in range(int(a), int(b) + 1)]
        checks += 1
    assert checks > 1000
    lessons = [int(n) for n in re.findall(r'"text": "Lesson (\d+) is about', text)]
    assert sorted(lessons) == list(range(1500)), "lessons are numbered 0..N-1 (train then validation), once each"


def test_cli(tmp_path, sample_module, capsys):
    assert sample_module.main(["--out", str(tmp_path / "x"), "--num-docs", "40", "--vocab-size", "100"]) == 2
    assert "--vocab-size 100 must be in" in capsys.readouterr().err
    assert sample_module.main(["--out", str(tmp_path / "y"), "--num-docs", "40", "--vocab-size", "300",
                               "--num-shards", "2", "--parquet"]) == 0  # fmt: skip
    assert (tmp_path / "y" / "data_parquet" / "train-00001-of-00002.parquet").exists()
    assert json.loads((tmp_path / "y" / "meta.json").read_text())["num_docs"] == 40


@pytest.mark.slow
def test_default_size_is_fast(tmp_path, sample_module):
    t0 = time.perf_counter()
    sample_module.main(["--out", str(tmp_path / "d")])
    assert time.perf_counter() - t0 < 20
