"""flame.data: packing, sharding over ranks x workers, mixing, varlen fields, exact resume, errors.

References are built independently of the pipeline: texts read straight from the files,
tokenized with the tokenizer's own ``__call__`` (the pipeline uses the Rust batch encoder), and
packed with plain list slicing.
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flame.data import IGNORE_INDEX, DataConfig, build_dataloader
from flame.data.packing import Window, varlen_fields


def read_texts(*files: Path) -> list[str]:
    return [json.loads(line)["text"] for f in files for line in Path(f).read_text().splitlines()]


def ref_docs(tokenizer, texts: list[str], bos: bool = False, eos: bool = True) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    pre = [tokenizer.bos_token_id] if bos else []
    post = [tokenizer.eos_token_id] if eos else []
    return [pre + x + post for x in ids]


def flat(docs: list[list[int]]) -> list[int]:
    return [t for d in docs for t in d]


def train_files(sample_dir: Path) -> list[Path]:
    return sorted((sample_dir / "data").glob("train-*.jsonl"))


def loader_for(tokenizer, dataset, *, dp_rank=0, dp_world_size=1, batch_size=2, seq_len=64, context_len=None,
               varlen=False, **cfg):  # fmt: skip
    cfg = DataConfig(dataset=str(dataset), **cfg)
    return build_dataloader(
        cfg, tokenizer, dp_rank=dp_rank, dp_world_size=dp_world_size, batch_size=batch_size, seq_len=seq_len,
        context_len=context_len, varlen=varlen,
    )  # fmt: skip


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def stream(batches: list[dict]) -> list[int]:
    return [t for b in batches for t in b["input_ids"].flatten().tolist()]


def assert_same_batches(expected: list[dict], got: list[dict]) -> None:
    assert len(expected) == len(got)
    for i, (a, b) in enumerate(zip(expected, got)):
        assert a.keys() == b.keys(), f"batch {i}: keys {sorted(b)} != {sorted(a)}"
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"batch {i}: '{k}' differs"


# ---------------------------------------------------------------------------------------------- packing


def test_fixed_packing_is_the_document_stream_without_padding(sample_dir, tokenizer):
    f = train_files(sample_dir)[0]
    loader = loader_for(tokenizer, f, batch_size=3, seq_len=61, repeat=False, tokenize_batch_size=7)
    batches = list(loader)
    for b in batches:
        assert set(b) == {"input_ids", "labels"}
        assert b["input_ids"].shape == (3, 61) and b["input_ids"].dtype == torch.int64
        assert torch.equal(b["labels"], b["input_ids"])
    ref = flat(ref_docs(tokenizer, read_texts(f)))
    n = len(ref) // (3 * 61) * (3 * 61)  # the last partial batch is dropped
    got = stream(batches)
    assert len(got) == n and got == ref[:n]


def test_bos_and_eos_separators(sample_dir, tokenizer):
    f = train_files(sample_dir)[1]
    got = stream(take(loader_for(tokenizer, f, seq_len=128, add_bos=True, add_eos=True), 4))
    ref = flat(ref_docs(tokenizer, read_texts(f), bos=True, eos=True))
    assert got[0] == tokenizer.bos_token_id and got == ref[: len(got)]
    got = stream(take(loader_for(tokenizer, f, seq_len=128, add_bos=True, add_eos=False), 4))
    assert tokenizer.eos_token_id not in got
    assert got == flat(ref_docs(tokenizer, read_texts(f), bos=True, eos=False))[: len(got)]


def test_repeat_starts_the_next_epoch(sample_dir, tokenizer):
    f = train_files(sample_dir)[2]
    ref = flat(ref_docs(tokenizer, read_texts(f)))
    n_batches = int(2.5 * len(ref)) // (4 * 256) + 1
    got = stream(take(loader_for(tokenizer, f, batch_size=4, seq_len=256), n_batches))
    assert got == (ref * 3)[: len(got)]


# ---------------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("layout", ["one_file", "four_files"])
def test_two_ranks_two_workers_read_disjoint_prefixes(sample_dir, tokenizer, layout):
    """2 DP ranks x 2 workers = 4 readers. One file (fewer shards than readers): reader g gets documents
    g, g+4, ...; four files: reader g gets file g. Every reader's stream is the prefix of its part."""
    files = train_files(sample_dir)
    if layout == "one_file":
        source, texts = files[0], read_texts(files[0])
        parts = [list(range(g, len(texts), 4)) for g in range(4)]
    else:
        source, texts = sample_dir / "data", read_texts(*files)
        sizes = [len(read_texts(f)) for f in files]
        starts = np.cumsum([0] + sizes)
        parts = [list(range(starts[g], starts[g + 1])) for g in range(4)]
    docs = ref_docs(tokenizer, texts)
    seen: list[set[int]] = []
    for rank in range(2):
        batches = take(loader_for(tokenizer, source, dp_rank=rank, dp_world_size=2, num_workers=2), 10)
        for worker in range(2):  # in-order loading: batch i comes from worker i % 2
            got = stream(batches[worker::2])
            part = parts[rank * 2 + worker]
            ref = flat([docs[i] for i in part])
            assert got == ref[: len(got)], f"rank {rank} worker {worker}: not the prefix of its part"
            lengths = np.cumsum([0] + [len(docs[i]) for i in part])
            seen.append({part[j] for j in range(len(part)) if lengths[j] < len(got)})
    union = set().union(*seen)
    assert sum(len(s) for s in seen) == len(union), "a document was read by two readers"
    if layout == "one_file":  # the readers together cover a prefix of the file
        assert set(range(4 * min(len(s) for s in seen))) <= union


def test_three_ranks_cover_the_corpus_once(sample_dir, tokenizer):
    """Black box: 3 ranks over 4 files (not a multiple: example-level split) read to the end; every
    complete document comes out once, and only the ranks' dropped tails are missing."""
    texts = read_texts(*train_files(sample_dir))
    docs = {tuple(d): i for i, d in enumerate(ref_docs(tokenizer, texts))}
    eos = tokenizer.eos_token_id
    found: list[int] = []
    for rank in range(3):
        toks = stream(list(loader_for(tokenizer, sample_dir / "data", dp_rank=rank, dp_world_size=3,
                                      batch_size=2, seq_len=128, repeat=False)))  # fmt: skip
        cut = [i + 1 for i, t in enumerate(toks) if t == eos]
        for a, b in zip([0] + cut[:-1], cut):
            assert tuple(toks[a:b]) in docs, f"rank {rank}: tokens {a}:{b} are not a corpus document"
            found.append(docs[tuple(toks[a:b])])
    assert len(found) == len(set(found)), "a document came out twice"
    min_len = min(len(d) for d in docs)
    assert len(docs) - len(found) <= 3 * (2 * 128 // min_len + 2)


# ---------------------------------------------------------------------------------------------- varlen


def test_varlen_fields_literal():
    w = Window(np.arange(100, 110), [0, 3, 4])  # documents [0,3) [3,4) [4,10); context_len 4
    cu, pos, labels = varlen_fields(w, context_len=4)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 4, 8, 10]
    assert pos.tolist() == [0, 1, 2, 0, 0, 1, 2, 3, 0, 1]
    assert labels.tolist() == [100, 101, 102, -100, -100, 105, 106, 107, 108, 109]
    w = Window(np.arange(10), [5])  # starts inside a document
    cu, pos, labels = varlen_fields(w, context_len=4)
    assert cu.tolist() == [0, 4, 5, 9, 10] and pos.tolist() == [0, 1, 2, 3, 0, 0, 1, 2, 3, 0]
    assert labels.tolist() == [0, 1, 2, 3, 4, -100, 6, 7, 8, 9]


@pytest.mark.parametrize("add_bos", [False, True])
def test_varlen_boundaries_match_reference(sample_dir, tokenizer, add_bos):
    f = train_files(sample_dir)[3]
    L, C = 80, 24
    batches = take(loader_for(tokenizer, f, batch_size=1, seq_len=L, context_len=C, varlen=True, add_bos=add_bos), 15)
    docs = ref_docs(tokenizer, read_texts(f), bos=add_bos)
    ref = flat(docs)
    doc_starts = set(np.cumsum([0] + [len(d) for d in docs]).tolist())
    for r, b in enumerate(batches):
        assert set(b) == {"input_ids", "labels", "cu_seqlens", "position_ids"}
        row = ref[r * L : (r + 1) * L]
        starts = [s - r * L for s in range(r * L + 1, (r + 1) * L) if s in doc_starts]
        cu, pos, labels = [], [], list(row)
        for a, e in zip([0] + starts, starts + [L]):
            for s in range(a, e, C):
                cu.append(s)
                pos += list(range(min(C, e - s)))
        for s in starts:
            labels[s] = IGNORE_INDEX
        assert b["input_ids"].tolist() == [row]
        assert b["cu_seqlens"].dtype == torch.int32 and b["cu_seqlens"].tolist() == cu + [L], f"row {r}"
        assert b["position_ids"].shape == (1, L) and b["position_ids"].tolist() == [pos], f"row {r}"
        assert b["labels"].tolist() == [labels], f"row {r}"
        if add_bos:  # every masked label is a BOS: documents begin with it
            assert all(row[s] == tokenizer.bos_token_id for s in starts)


# ---------------------------------------------------------------------------------------------- mixing


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("data")


@pytest.fixture(scope="module")
def second_source(tmp_path_factory, sample_module) -> Path:
    """500 documents of three lessons each (about 3x longer than the first source's, so document
    shares and token shares differ), numbered from 10**6 so none equals a first-source document."""
    path = tmp_path_factory.mktemp("mix") / "other.jsonl"
    lessons = list(sample_module.generate_documents(1500, seed=1, start=10**6))
    sample_module.write_jsonl(path, [" ".join(lessons[i : i + 3]) for i in range(0, 1500, 3)])
    return path


@pytest.mark.parametrize("probs,seed", [("0.7,0.3", 42), ("1,3", 7)])
def test_mixing_token_shares_and_order(sample_dir, tokenizer, second_source, probs, seed):
    a_docs = ref_docs(tokenizer, read_texts(*train_files(sample_dir)))
    b_docs = ref_docs(tokenizer, read_texts(second_source))
    lookup = {tuple(d): ("a", i) for i, d in enumerate(a_docs)} | {tuple(d): ("b", i) for i, d in enumerate(b_docs)}
    loader = loader_for(tokenizer, f"{sample_dir / 'data'},{second_source}", data_probs=probs, seed=seed,
                        batch_size=4, seq_len=512)  # fmt: skip
    toks = stream(take(loader, 50))  # 102400 tokens
    assert len(toks) >= 10**5
    eos = tokenizer.eos_token_id
    cut = [i + 1 for i, t in enumerate(toks) if t == eos]
    picks = [lookup[tuple(toks[a:b])] for a, b in zip([0] + cut[:-1], cut)]
    for name in ("a", "b"):  # each source keeps its own order, nothing skipped or repeated
        assert [i for s, i in picks if s == name] == list(range(sum(s == name for s, _ in picks)))
    share_b = sum(len(b_docs[i]) for s, i in picks if s == "b") / cut[-1]
    w = [float(x) for x in probs.split(",")]
    assert abs(share_b - w[1] / sum(w)) < 0.02, f"source b has {share_b:.3f} of the tokens, wanted {w[1] / sum(w)}"
    other = take(loader_for(tokenizer, f"{sample_dir / 'data'},{second_source}", data_probs=probs, seed=seed + 1,
                            batch_size=4, seq_len=512), 5)  # fmt: skip
    assert stream(other) != toks[: 5 * 4 * 512], "the mixing order does not depend on the seed"


# ---------------------------------------------------------------------------------------------- resume


def _resume_run(tokenizer, dataset, stop: int, total: int, **kw) -> tuple[list[dict], list[dict], bytes]:
    full = take(loader_for(tokenizer, dataset, **kw), total)
    loader = loader_for(tokenizer, dataset, **kw)
    it = iter(loader)
    head = [next(it) for _ in range(stop)]
    blob = pickle.dumps(loader.state_dict())  # what a checkpoint stores (torchtitan pickles/DCP serializes)
    del it
    resumed = loader_for(tokenizer, dataset, **kw)
    resumed.load_state_dict(pickle.loads(blob))
    return full, head + take(resumed, total - stop), blob


@pytest.mark.parametrize(
    "varlen,num_workers,shuffle_buffer,stop",
    [(False, 0, 0, 5), (True, 0, 6, 4), (False, 2, 6, 5), (True, 2, 0, 7)],
)
def test_resume_is_bit_exact_mixed_sources(sample_dir, tokenizer, varlen, num_workers, shuffle_buffer, stop):
    data = sample_dir / "data"
    kw = dict(
        dp_rank=1, dp_world_size=2, batch_size=1 if varlen else 3, seq_len=96, context_len=40 if varlen else None,
        varlen=varlen, data_probs="0.6,0.4", num_workers=num_workers, shuffle_buffer=shuffle_buffer,
        tokenize_batch_size=5,
    )  # fmt: skip
    dataset = f"{data},{data / 'validation-00000-of-00001.jsonl'}"
    full, resumed, blob = _resume_run(tokenizer, dataset, stop, 12, **kw)
    assert_same_batches(full, resumed)
    if not shuffle_buffer:
        assert len(blob) < 20_000, f"loader state is {len(blob)} bytes: tokens should not be stored"


@pytest.mark.parametrize("shuffle_buffer", [0, 3])
def test_resume_at_every_step_across_epochs(tmp_path, sample_module, tokenizer, shuffle_buffer):
    """Tiny sources (a two-file folder with an empty text, and a file) so the stops land in every
    situation: mid-document, mid-tokenizer-batch, around epoch boundaries (where `datasets` reorders
    the folder's files), with a partly filled shuffle buffer."""
    (tmp_path / "a").mkdir()
    b = tmp_path / "b.jsonl"
    texts = list(sample_module.generate_documents(4, seed=3))  # ~400 tokens: 4 epochs in 30 steps
    sample_module.write_jsonl(tmp_path / "a" / "part-0.jsonl", texts[:2] + [""])
    sample_module.write_jsonl(tmp_path / "a" / "part-1.jsonl", texts[2:])
    sample_module.write_jsonl(b, list(sample_module.generate_documents(4, seed=4, start=500)))
    a = tmp_path / "a"
    kw = dict(batch_size=2, seq_len=40, data_probs="2,1", tokenize_batch_size=2, shuffle_buffer=shuffle_buffer)
    full = take(loader_for(tokenizer, f"{a},{b}", **kw), 30)
    for stop in range(1, 30, 3):
        loader = loader_for(tokenizer, f"{a},{b}", **kw)
        it = iter(loader)
        head = [next(it) for _ in range(stop)]
        state = pickle.loads(pickle.dumps(loader.state_dict()))
        resumed = loader_for(tokenizer, f"{a},{b}", **kw)
        resumed.load_state_dict(state)
        assert_same_batches(full, head + take(resumed, 30 - stop))


@pytest.mark.parametrize("world", [1, 3, 4])
def test_datasets_streaming_resume_contract(sample_dir, world):
    """What DocumentStream relies on in `datasets` (pinned <4.8): a fresh split view loaded with the
    state taken between ``iter(batch_size)`` batches continues at the next example, also when that
    state was itself taken after a resume (resume after resume)."""
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    ds = load_dataset("json", data_files=[str(f) for f in train_files(sample_dir)], split="train", streaming=True)

    def view(state=None):
        v = split_dataset_by_node(ds, rank=world - 1, world_size=world)
        if state is not None:
            v.load_state_dict(state)
        return v, v.iter(batch_size=7)

    full = [t for b in view()[1] for t in b["text"]]
    got, state = [], None
    for _ in range(3):  # three consecutive resumes, 5 batches each
        v, it = view(state)
        got += [t for _, b in zip(range(5), it) for t in b["text"]]
        state = v.state_dict()
    got += [t for b in view(state)[1] for t in b["text"]]
    assert got == full


def test_resume_with_other_layout_fails_clearly(sample_dir, tokenizer):
    f = train_files(sample_dir)[0]
    loader = loader_for(tokenizer, f, dp_rank=0, dp_world_size=2)
    take(loader, 2)
    state = loader.state_dict()
    # another number of ranks resumes (tests/flame/test_data_reshard.py) but needs every rank's entry
    with pytest.raises(ValueError, match="saved by 2 data-parallel ranks has no entry for dp_rank_1"):
        loader_for(tokenizer, f).load_state_dict(state)
    with pytest.raises(ValueError, match="no entry for dp_rank_1 \\(found: dp_rank_0\\)"):
        loader_for(tokenizer, f, dp_rank=1, dp_world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="data settings: shuffle_buffer 0 -> 2; seq_len 64 -> 128$"):
        loader_for(tokenizer, f, dp_world_size=2, seq_len=128, shuffle_buffer=2).load_state_dict(state)
    with pytest.raises(ValueError, match="data settings: seq_len 64 -> 128$"):  # num_workers may change, seq_len not
        loader_for(tokenizer, f, seq_len=128, num_workers=2).load_state_dict({**state, "dp_rank_1": state["dp_rank_0"]})


# ---------------------------------------------------------------------------------------------- sources


def _write_formats(tmp_path: Path, kind: str, texts: list[str]) -> tuple[str, dict]:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind in ("parquet", "parquet_in_memory"):
        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({"text": texts}), path, row_group_size=7)
        return str(path), {"streaming": kind == "parquet"}
    if kind == "txt":
        path = tmp_path / "d.txt"
        path.write_text("\n".join(texts) + "\n")
        return str(path), {}
    if kind == "json_gz":
        import gzip

        path = tmp_path / "d.json.gz"
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(texts))
        return str(path), {"text_column": "body"}
    if kind == "save_to_disk":
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "disk"))
        return str(tmp_path / "disk"), {}
    if kind == "dataset_dict":
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x"]}),
                                   "validation": datasets.Dataset.from_dict({"text": texts})})  # fmt: skip
        dd.save_to_disk(str(tmp_path / "dd"))
        return str(tmp_path / "dd"), {"dataset_split": "validation"}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["parquet", "parquet_in_memory", "txt", "json_gz", "save_to_disk", "dataset_dict"])
def test_local_formats(tmp_path, monkeypatch, sample_module, tokenizer, kind):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # in-memory loads cache here
    texts = list(sample_module.generate_documents(40, seed=5))
    path, cfg = _write_formats(tmp_path, kind, texts)
    got = stream(take(loader_for(tokenizer, path, seq_len=100, **cfg), 3))
    assert got == flat(ref_docs(tokenizer, texts))[: len(got)]


def test_folder_split(sample_dir, tokenizer):
    got = stream(take(loader_for(tokenizer, sample_dir / "data", dataset_split="validation"), 2))
    ref = flat(ref_docs(tokenizer, read_texts(sample_dir / "data" / "validation-00000-of-00001.jsonl")))
    assert got == ref[: len(got)]


def test_config_per_source_fields():
    specs = DataConfig(dataset="a.jsonl, b", dataset_name="none,cfg", data_probs="1,3", text_column="content").sources()
    assert [s.path for s in specs] == ["a.jsonl", "b"] and [s.config_name for s in specs] == [None, "cfg"]
    assert [s.prob for s in specs] == [0.25, 0.75] and all(s.text_column == "content" for s in specs)
    assert all(s.split == "train" and s.streaming for s in specs)


# ---------------------------------------------------------------------------------------------- errors


def _error_cases(tmp_path: Path, sample_dir: Path, tokenizer) -> dict:
    from flame.data import build_tokenizer

    f = train_files(sample_dir)[0]
    two = f"{f},{f}"
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "col.jsonl").write_text('{"content": "hi", "id": 1}\n')
    (tmp_path / "notok").mkdir()
    load = lambda path, **kw: lambda: loader_for(tokenizer, path, **kw)  # noqa: E731
    return {
        "missing file": (FileNotFoundError, "data source not found: .*nope.jsonl", load(tmp_path / "nope.jsonl")),
        "missing folder": (FileNotFoundError, "data source not found: ./no/such/dir", load("./no/such/dir")),
        "empty": (ValueError, "empty.jsonl' \\(split train\\) is empty", load(tmp_path / "empty.jsonl")),
        "text column": (ValueError, "no text column 'text' \\(columns: content, id\\)", load(tmp_path / "col.jsonl")),
        "tokenizer folder": (
            FileNotFoundError,
            "tokenizer not found: folder .*notok",
            lambda: build_tokenizer(str(tmp_path / "notok")),
        ),
        "tokenizer path": (
            FileNotFoundError,
            "tokenizer not found: .*a/tok is not",
            lambda: build_tokenizer(str(tmp_path / "a/tok")),
        ),
        "probs count": (ValueError, "data.data_probs has 1 weights .* 2 sources", load(two, data_probs="1")),
        "probs sign": (ValueError, "data.data_probs must all be positive", load(two, data_probs="1,0")),
        "probs number": (ValueError, "data.data_probs must be comma-separated numbers", load(two, data_probs="1,x")),
        "probs missing": (ValueError, "data.data_probs is required with 2 sources", load(two)),
        "name count": (
            ValueError,
            "data.dataset_name has 3 entries",
            load(two, data_probs="1,1", dataset_name="a,b,c"),
        ),
        "varlen batch": (ValueError, "varlen packing needs batch_size 1, got 2", load(f, varlen=True)),
        "no separator": (ValueError, "add_bos and data.add_eos are both off", load(f, add_bos=False, add_eos=False)),
        "dp rank": (ValueError, "dp_rank 2 is not in \\[0, dp_world_size=2\\)", load(f, dp_rank=2, dp_world_size=2)),
    }


ERROR_CASES = [
    "missing file", "missing folder", "empty", "text column", "tokenizer folder", "tokenizer path", "probs count",
    "probs sign", "probs number", "probs missing", "name count", "varlen batch", "no separator", "dp rank",
]  # fmt: skip


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_are_one_clear_line(tmp_path, sample_dir, tokenizer, case):
    exc_type, match, fn = _error_cases(tmp_path, sample_dir, tokenizer)[case]
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value), f"not one line: {info.value}"


def test_reader_without_documents_fails_clearly(tmp_path, tokenizer):
    (tmp_path / "two.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    loader = loader_for(tokenizer, tmp_path / "two.jsonl", dp_rank=2, dp_world_size=3)
    with pytest.raises(RuntimeError, match="gave no documents to data reader 2 of 3"):
        take(loader, 1)


# ----------------------------------------------------------------------------- bad jsonl (issue 32, item 10)


def test_all_empty_texts_is_one_line_before_training(tmp_path, sample_dir, tokenizer):
    """A jsonl whose texts are all empty fails when the loader is built (the trainer's one-line config
    error), not with a traceback from the first training step."""
    from flame.config import FlameConfigManager
    from flame.train import build_data

    path = tmp_path / "empty_texts.jsonl"
    path.write_text("".join(json.dumps({"text": ""}) + "\n" for _ in range(5)))
    with pytest.raises(ValueError, match=r"empty_texts\.jsonl' has no text: all 5 documents have an empty 'text'"):
        loader_for(tokenizer, path)
    tok = str(sample_dir / "tokenizer")
    job = FlameConfigManager().parse_args(
        ["--model.config", "x.json", "--model.tokenizer_path", tok, "--data.dataset", str(path)]
    )
    with pytest.raises(ValueError, match=r"data\.dataset = .*: data source .* has no text") as info:
        build_data(job, 0, 1)
    assert "\n" not in str(info.value)


def test_broken_jsonl_line_names_file_and_line(tmp_path, tokenizer):
    good = [json.dumps({"text": f"document {i}"}) for i in range(5)]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([*good, '{"text": "unterminated', *good]) + "\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl line 6 is not valid JSON \(Unterminated string") as info:
        loader_for(tokenizer, path)
    assert "\n" not in str(info.value)


def test_broken_jsonl_line_found_mid_stream(tmp_path, tokenizer):
    """A broken line in a later file of a folder (read while training) also names the file and the line."""
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(20)))
    (folder / "b.jsonl").write_text('{"text": "fine"}\n{"text": "fine"}\n{"text": oops}\n')
    loader = loader_for(tokenizer, folder, seq_len=32)
    with pytest.raises(ValueError, match=r"b\.jsonl line 3 is not valid JSON"):
        take(loader, 200)
