"""Resuming the data stream with another number of readers (data-parallel ranks x loader workers).

The corpus' documents are numbered (each text starts with ``#<id>#``), so every document start in
the packed windows names its document. Old readers read a few batches each (different amounts: the
readers of a real run drift apart by document lengths), their states are merged as a checkpoint
holds them, and new loaders resume from them; then each new reader reads until it is well into the
next epoch. Checked: over the epoch in progress (before + after the change) every document starts
exactly once, no repeats, no gaps, and each new reader then reads its own share of the next epoch.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.flame.test_data import loader_for

N_DOCS = 60
ID = re.compile(r"^#(\d+)#")


@pytest.fixture(scope="module")
def numbered(tmp_path_factory, sample_module) -> Path:
    path = tmp_path_factory.mktemp("numbered") / "docs.jsonl"
    texts = [f"#{i}# {t}" for i, t in enumerate(sample_module.generate_documents(N_DOCS, seed=11))]
    texts[7] = ""  # an empty text: dropped by the encoder, not a document (ids skip 7)
    sample_module.write_jsonl(path, texts)
    return path


def doc_ids(tokenizer, windows: list[list[int]]) -> list[int]:
    """Ids of the documents that start in one reader's windows (in order). Before the first document start
    may come continuations: the ends of documents old readers had begun (after a change, one per old reader)."""
    toks = [t for w in windows for t in w]
    eos = tokenizer.eos_token_id
    ids = []
    for p in [0] + [i + 1 for i, t in enumerate(toks[:-1]) if t == eos]:
        m = ID.match(tokenizer.decode(toks[p : p + 12]))
        assert m or not ids, f"token {p} starts a document without an id: {tokenizer.decode(toks[p : p + 12])!r}"
        if m:
            ids.append(int(m.group(1)))
    return ids


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


def check_epoch(tokenizer, before, afterwards):
    """Every document starts exactly once in the epoch in progress; then each new reader h of R' reads
    documents h, h+R', ... (its share of the one-file corpus) of the next epoch."""
    ids = [i for i in range(N_DOCS) if i != 7]
    epoch = Counter(i for windows in before for i in doc_ids(tokenizer, windows))
    new_readers = len(afterwards)
    for h, windows in enumerate(afterwards):
        got = doc_ids(tokenizer, windows)
        share = [i for i in range(h, N_DOCS, new_readers) if i != 7]  # examples h, h+R', ... (7 is empty)
        later = share * 3  # the next epochs: its share, again and again
        j = next((j for j in range(len(got)) if got[j:] == later[: len(got) - j]), len(got))
        assert len(got) - j > len(share) // 2, f"new reader {h}: the next epochs are not its share: read {got}"
        epoch.update(got[:j])
    repeated = sorted(i for i, n in epoch.items() if n > 1)
    missing = sorted(set(ids) - set(epoch))
    assert not repeated and not missing, f"epoch in progress: repeated {repeated}, missing {missing}"
    assert set(epoch) == set(ids)


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
    before, afterwards = run(tokenizer, numbered, old, new, steps, after=120 // new[0] + 10)  # ~1.5 epochs
    check_epoch(tokenizer, before, afterwards)


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
    check_epoch(tokenizer, before, reader_windows([next(it) for _ in range(130)], 0))


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
