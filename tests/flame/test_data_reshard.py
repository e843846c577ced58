"""Resuming the data stream with another number of readers (data-parallel ranks x loader workers).

The corpus' documents are numbered (each text starts with ``#<id>#``), so every document start in
the packed windows names its document. Old readers read a few batches each (different amounts: the
readers of a real run drift apart by document lengths), their states are merged as a checkpoint
holds them, and new loaders resume from them; then each new reader reads until it is well into the
next epoch. Checked: over the epoch in progress (before + after the change) every document starts
exactly once, no repeats, no gaps, and each new reader then reads its own share of the next epoch.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.flame.test_data import loader_for
from tests.flame.test_train import ROOT, launch

N_DOCS = 60
ID = re.compile(r"^#(\d+)#")


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("data_reshard")


@pytest.fixture(scope="module")
def numbered(tmp_path_factory, sample_module) -> Path:
    path = tmp_path_factory.mktemp("numbered") / "docs.jsonl"
    texts = [f"#{i}# {t[:160]}" for i, t in enumerate(sample_module.generate_documents(N_DOCS, seed=11))]
    texts[7] = ""  # an empty text: dropped by the encoder, not a document (ids skip 7)
    sample_module.write_jsonl(path, texts)
    return path


def doc_ids(tokenizer, windows: list[list[int]]) -> tuple[list[int], list[int] | None]:
    """Ids of the documents that start in one reader's windows (in order), and the tokens of a last document
    start cut too short to read its id (or None). Before the first document start may come continuations: the
    ends of documents that old readers had begun (after a change, up to one per old reader)."""
    toks = [t for w in windows for t in w]
    eos = tokenizer.eos_token_id
    ids, cut = [], None
    for p in [0] + [i + 1 for i, t in enumerate(toks[:-1]) if t == eos]:
        m = ID.match(tokenizer.decode(toks[p : p + 12]))
        if m is None and eos not in toks[p:] and len(toks) - p < 12:
            cut = toks[p:]  # the stream ends a few tokens into this document
        elif m:
            ids.append(int(m.group(1)))
        else:
            assert not ids, f"token {p} starts a document without an id: {tokenizer.decode(toks[p : p + 12])!r}"
    return ids, cut


def reader_windows(batches: list[dict], workers: int) -> list[list[list[int]]]:
    """Per loader worker of one rank, its windows in order (in-order loading: batch i is worker i % workers')."""
    w = max(workers, 1)
    return [[row for b in batches[k::w] for row in b["input_ids"].tolist()] for k in range(w)]


def run(tokenizer, path, old: tuple[int, int], new: tuple[int, int], steps: list[int], after: int, **kw):
    """Old (ranks, workers) read ``steps[r]`` batches per rank; new (ranks, workers) resume and read ``after``.
    Returns (old readers' windows, new readers' windows)."""
    kw = dict(batch_size=2, seq_len=48, tokenize_batch_size=5, **kw)
    state, before = {}, []
    for r in range(old[0]):
        loader = loader_for(tokenizer, path, dp_rank=r, dp_world_size=old[0], num_workers=old[1], **kw)
        it = iter(loader)
        before += reader_windows([next(it) for _ in range(steps[r])], old[1])
        state.update(pickle.loads(pickle.dumps(loader.state_dict())))
        del it
    afterwards = []
    for h in range(new[0]):
        loader = loader_for(tokenizer, path, dp_rank=h, dp_world_size=new[0], num_workers=new[1], **kw)
        loader.load_state_dict({k: v for k, v in state.items() if k.startswith("dp_rank_") or k == "world_size"})
        it = iter(loader)
        afterwards += reader_windows([next(it) for _ in range(after)], new[1])
        del it
    return before, afterwards


def check_epoch(tokenizer, before, afterwards, path: Path):
    """Every document starts exactly once in the epoch in progress; then each new reader h of R' reads
    documents h, h+R', ... (its share of the one-file corpus) of the next epochs. A document whose start an
    old reader cut too short to read its id counts as the missing document whose tokens begin that way."""
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    tokens = {i: tokenizer(t, add_special_tokens=False)["input_ids"] for i, t in enumerate(texts) if t}
    epoch, cuts = Counter(), []
    for windows in before:
        got, cut = doc_ids(tokenizer, windows)
        epoch.update(got)
        cuts += [cut] if cut else []
    new_readers = len(afterwards)
    for h, windows in enumerate(afterwards):
        got, _ = doc_ids(tokenizer, windows)
        share = [i for i in tokens if i % new_readers == h]  # examples h, h+R', ... (the empty text is no document)
        later = share * 3  # the next epochs: its share, again and again
        j = next((j for j in range(len(got)) if got[j:] == later[: len(got) - j]), len(got))
        assert len(got) - j >= 3, f"new reader {h}: did not reach its share of the next epoch: read {got}"
        epoch.update(got[:j])
    repeated = sorted(i for i, n in epoch.items() if n > 1)
    missing = sorted(set(tokens) - set(epoch))
    assert not repeated, f"epoch in progress: repeated {repeated}"
    assert len(missing) == len(cuts), f"epoch in progress: missing {missing}"
    for cut in cuts:
        match = [i for i in missing if tokens[i][: len(cut)] == cut]
        assert match, f"epoch in progress: missing {missing}; a cut start {cut} is none of them"
        missing.remove(match[0])
    assert set(epoch) | set(tokens) == set(tokens)


@pytest.mark.parametrize(
    "old, new, steps",
    [
        ((2, 0), (1, 0), [5, 7]),  # 2 ranks -> 1
        ((1, 0), (4, 0), [9]),  # 1 rank -> 4
        ((2, 2), (3, 0), [6, 9]),  # 2 ranks x 2 workers -> 3 ranks
        ((1, 0), (1, 2), [4]),  # 1 worker -> 2 workers
    ],
)
def test_resume_on_other_readers_reads_each_document_once(numbered, tokenizer, old, new, steps):
    before, afterwards = run(tokenizer, numbered, old, new, steps, after=50 // new[0] + 5)  # ~1.5 epochs
    check_epoch(tokenizer, before, afterwards, numbered)


def test_resume_twice_while_pieces_remain(numbered, tokenizer, tmp_path):
    """2 -> 3 -> 1: the second change comes while the new readers still read the first one's pieces."""
    kw = dict(batch_size=2, seq_len=48, tokenize_batch_size=5)
    state, before = {}, []
    for r in range(2):
        loader = loader_for(tokenizer, numbered, dp_rank=r, dp_world_size=2, **kw)
        it = iter(loader)
        before += reader_windows([next(it) for _ in range(4 + r)], 0)
        state.update(loader.state_dict())
    middle = {}
    for h in range(3):
        loader = loader_for(tokenizer, numbered, dp_rank=h, dp_world_size=3, **kw)
        loader.load_state_dict(pickle.loads(pickle.dumps(state)))
        it = iter(loader)
        before += reader_windows([next(it) for _ in range(2 + h)], 0)
        middle.update(pickle.loads(pickle.dumps(loader.state_dict())))
    loader = loader_for(tokenizer, numbered, **kw)
    loader.load_state_dict(middle)
    it = iter(loader)
    check_epoch(tokenizer, before, reader_windows([next(it) for _ in range(55)], 0), numbered)


def test_same_layout_after_a_change_resumes_exactly(numbered, tokenizer):
    """A run resumed on another layout, checkpointed and resumed again on its own layout, reads on bit-exactly."""
    kw = dict(batch_size=2, seq_len=48, tokenize_batch_size=5, shuffle_buffer=3)
    old = loader_for(tokenizer, numbered, **kw)
    it = iter(old)
    [next(it) for _ in range(5)]
    state = old.state_dict()

    def resumed(h):
        loader = loader_for(tokenizer, numbered, dp_rank=h, dp_world_size=2, **kw)
        loader.load_state_dict(pickle.loads(pickle.dumps(state)))
        return loader

    full = [b["input_ids"].tolist() for _, b in zip(range(20), resumed(1))]
    for stop in (1, 3, 8):
        loader = resumed(1)
        it = iter(loader)
        head = [next(it)["input_ids"].tolist() for _ in range(stop)]
        again = loader_for(tokenizer, numbered, dp_rank=1, dp_world_size=2, **kw)
        again.load_state_dict(pickle.loads(pickle.dumps(loader.state_dict())))
        assert head + [b["input_ids"].tolist() for _, b in zip(range(20 - stop), again)] == full, f"stop {stop}"


# ----------------------------------------------------------------------------- torchrun: the trainer


def trained_windows(dump: Path, ranks: int) -> list[list[list[int]]]:
    """Per rank, per launch (in order), the rows of every batch it trained on."""
    out = []
    for rank in range(ranks):
        launches: dict[int, list[list[int]]] = {}
        for line in (dump / f"tokens-rank{rank}.jsonl").read_text().splitlines():
            row = json.loads(line)
            launches.setdefault(row["launch"], []).extend(row["input_ids"])
        out.append(list(launches.values()))
    return out


@pytest.mark.parametrize("old, new", [(2, 1), (1, 4)])
def test_trainer_resumes_on_another_number_of_ranks(numbered, sample_dir, tokenizer, tmp_path, old, new):
    """torchrun (gloo): train on ``old`` ranks to a checkpoint, resume the same dump folder on ``new`` ranks
    until well into the next epoch; every document of the first epoch is trained on exactly once."""
    args = [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--data.dataset", str(numbered), "--data.tokenize_batch_size", "5", "--data.shuffle_buffer", "0",
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--training.seq_len", "32", "--training.batch_size", "2",
        "--lr_scheduler.warmup_steps", "2", "--metrics.log_freq", "1",
        "--checkpoint.last_save_model_only", "false",
    ]  # fmt: skip
    script = str(ROOT / "tests" / "flame" / "dist" / "train_recording_tokens.py")
    first = 12 // old
    proc, _ = launch(old, [*args, "--training.steps", str(first), "--checkpoint.interval", str(first)], tmp_path,
                     script=script, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    more = 60 // new + 4  # the epoch's rest and about half of the next (an epoch is ~3300 tokens, 64 per rank-step)
    proc, _ = launch(new, [*args, "--training.steps", str(first + more), "--checkpoint.interval", "1000"], tmp_path,
                     script=script, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    text = proc.stdout + proc.stderr
    assert f"the checkpoint's {old} data reader(s) resume on {new}" in text, text[-3000:]
    windows = trained_windows(tmp_path, max(old, new))
    before = [w[0] for w in windows[:old]]
    afterwards = [w[-1] for w in windows[:new]]
    assert all(len(w) == first * 2 for w in before) and all(len(w) == more * 2 for w in afterwards)
    check_epoch(tokenizer, before, afterwards, numbered)
