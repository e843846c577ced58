"""The packed, stateful, data-parallel-aware loader: ``build_dataloader``.

Pipeline per reader (one data-parallel rank x one loader worker)::

    sources --split by reader--> DocumentStream (batched tokenization, BOS/EOS)
            --Mixer (token shares = data_probs)--> Packer (seq_len windows)
            --WindowShuffler (optional)--> collate (B windows, or varlen B=1) -> batch dict

The dataset yields whole batches (the DataLoader runs with ``batch_size=None``), so a worker's
state after a batch names exactly the next token of its stream.
"""

from __future__ import annotations

import pickle
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.tools.logging import logger

from flame.data.config import DataConfig, SourceSpec
from flame.data.mixing import Mixer
from flame.data.packing import Packer, WindowShuffler, collate
from flame.data.reshard import PieceStream, plan, remaining_pieces
from flame.data.sources import DocumentStream, SourceExhausted, open_source
from flame.data.tokenize import TextEncoder

STATE_VERSION = 1
RESHARDABLE = ("dp_world_size", "num_workers")  # layout keys a resume may change (the stream is re-split)


class PackedDataset(IterableDataset):
    """Yields packed batches for one data-parallel rank; each loader worker reads its own share.

    ``state_dict``/``load_state_dict`` follow torchdata's ``Stateful`` protocol; the state is the
    packer position (plus the shuffle buffer), a few small tuples per source.
    """

    def __init__(
        self,
        sources: list[tuple[SourceSpec, Any]],
        encoder: TextEncoder,
        cfg: DataConfig,
        *,
        dp_rank: int,
        dp_world_size: int,
        batch_size: int,
        seq_len: int,
        context_len: int,
        varlen: bool,
        layout: dict,
    ):
        self.sources, self.encoder, self.cfg = sources, encoder, cfg
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size
        self.batch_size, self.seq_len, self.context_len, self.varlen = batch_size, seq_len, context_len, varlen
        self.layout = layout
        self.num_readers = dp_world_size * max(cfg.num_workers, 1)
        self._live: tuple[int, Packer, WindowShuffler | None, dict | None] | None = None
        self._pending: dict | None = None
        self._resharded: dict[int, dict] = {}  # reader -> state, after a resume on another number of readers
        self._opened: dict[tuple[int, int], Any] = {}

    def _reader(self) -> tuple[int, int, str]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader, readers = self.dp_rank * workers + worker, self.dp_world_size * workers
        who = (
            f"data reader {reader} of {readers} (dp rank {self.dp_rank} of {self.dp_world_size}, "
            f"loader worker {worker} of {workers})"
        )
        return reader, readers, who

    def dataset_for(self, source: int, readers: int):
        """Source ``source`` opened for a layout of ``readers`` readers (an in-memory source is cut into
        that many shards); this run's own layout is the one already open."""
        if readers == self.num_readers:
            return self.sources[source][1]
        key = (source, readers)
        if key not in self._opened:
            self._opened[key] = open_source(self.sources[source][0], readers)
        return self._opened[key]

    def pipeline(self, reader: int, readers: int, state: dict | None, who: str):
        """(packer, shuffler) of reader ``reader`` of ``readers``, at ``state`` (None: the start)."""
        cfg = self.cfg
        reshard = (state or {}).get("reshard")
        streams = []
        for i, (spec, _) in enumerate(self.sources):
            args = (spec, self.encoder, reader, readers, cfg.tokenize_batch_size, cfg.repeat, who)
            if reshard is None:
                streams.append(DocumentStream(self.dataset_for(i, readers), *args))
            else:
                src = reshard["sources"][i]
                streams.append(PieceStream(src["pieces"], src["native_epoch"], partial(self.dataset_for, i), *args))
        mixer = Mixer(streams, [spec.prob for spec, _ in self.sources], cfg.seed, reader)
        packer = Packer(mixer, self.seq_len)
        shuffler = WindowShuffler(packer, cfg.shuffle_buffer, cfg.seed, reader) if cfg.shuffle_buffer else None
        if state is not None:
            if state["packer"] is not None:
                packer.seek(state["packer"])
            packer.set_carry([np.asarray(c) for c in state.get("carry") or []])
            if shuffler is not None and state["shuffle"] is not None:
                shuffler.load_state_dict(state["shuffle"])
        return packer, shuffler

    def _build(self) -> tuple[int, Packer, WindowShuffler | None, dict | None]:
        reader, readers, who = self._reader()
        state, self._pending = self._pending, None
        if state is None:
            state = self._resharded.pop(reader, None)
        if state is not None and state["reader"] is not None and state["reader"] != reader:
            raise ValueError(f"data loader state of reader {state['reader']} was given to reader {reader}")
        packer, shuffler = self.pipeline(reader, readers, state, who)
        return reader, packer, shuffler, (state or {}).get("reshard")

    def __iter__(self):
        self._live = None  # until the new iteration starts, the state is the pending (loaded) one
        return self._batches()

    def _batches(self):
        if get_worker_info() is not None:
            import fsspec.asyn

            fsspec.asyn.reset_lock()  # a forked worker must not share the parent's fsspec event loop
        self._live = self._build()
        _, packer, shuffler, _ = self._live
        source = shuffler or packer
        while True:
            try:
                windows = [source.next_window() for _ in range(self.batch_size)]
            except SourceExhausted:
                return  # a last, partial batch is dropped: every batch has the full shape
            yield collate(windows, self.varlen, self.context_len)

    def state_dict(self) -> dict:
        if self._live is None:
            if self._pending is not None:
                return self._pending
            if self._resharded:
                return self._resharded[self._reader()[0]]
            return {"version": STATE_VERSION, "reader": None, "packer": None, "shuffle": None}
        reader, packer, shuffler, reshard = self._live
        state = {
            "version": STATE_VERSION,
            "reader": reader,
            "packer": packer.position(),
            "shuffle": shuffler.state_dict() if shuffler is not None else None,
        }
        if reshard is not None:  # resumed on another number of readers: the pieces it still reads
            state["reshard"] = reshard
        carry = packer.carry()
        if carry:
            state["carry"] = [torch.from_numpy(c.copy()) for c in carry]
        return state

    def load_resharded(self, old_states: list[dict | None], old_readers: int) -> str:
        """Resume from the states of the ``old_readers`` readers of a run with another layout
        (``old_states[g]``: reader ``g``'s state, None if it never started); see ``flame/data/reshard.py``.
        Returns a one-line summary."""
        debts = []
        for g, state in enumerate(old_states):
            packer, shuffler = self.pipeline(g, old_readers, state, f"data reader {g} of {old_readers} (checkpoint)")
            per_source = [remaining_pieces(stream, g, old_readers) for stream in packer.mixer.streams]
            debts.append((per_source, packer.leftover(), shuffler.windows() if shuffler is not None else []))
        workers = max(self.cfg.num_workers, 1)
        mine = [self.dp_rank * workers + w for w in range(workers)]
        planned = plan(debts, old_readers, self.num_readers, mine)
        self._pending, self._live, self._resharded = None, None, {}
        for h, part in planned.items():
            shuffle = None
            if self.cfg.shuffle_buffer:
                shuffler = WindowShuffler(None, self.cfg.shuffle_buffer, self.cfg.seed, h)
                shuffler.add(part["windows"])
                shuffle = shuffler.state_dict()
            self._resharded[h] = {
                "version": STATE_VERSION,
                "reader": h,
                "packer": None,
                "shuffle": shuffle,
                "carry": [torch.from_numpy(np.array(c, dtype=np.int64)) for c in part["carry"]],
                "reshard": {"sources": part["sources"]},
            }
        pieces = sum(len(src["pieces"]) for part in planned.values() for src in part["sources"])
        return (
            f"data: the checkpoint's {old_readers} data reader(s) resume on {self.num_readers}; this rank's "
            f"{len(mine)} reader(s) read {pieces} piece(s) of the epoch in progress (every document of it once), "
            f"then their own share from the next epoch"
        )

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')} is not {STATE_VERSION}")
        self._pending = state
        self._live = None


class FlameDataLoader(ParallelAwareDataloader):
    """torchtitan's data-parallel-aware ``StatefulDataLoader`` over a :class:`PackedDataset`.

    ``state_dict()`` is ``{"dp_rank_<r>": pickled state, "world_size": dp_world_size}`` (what
    torchtitan's ``CheckpointManager`` stores per rank). ``load_state_dict`` takes this rank's entry
    when the layout is the same (exact resume), or every rank's entries when the data-parallel degree
    or ``num_workers`` changed: the stream is then re-split over the new readers (``flame/data/reshard.py``;
    the checkpoint loader passes all entries). Other changed data settings raise one clear line.
    """

    def __init__(self, dataset: PackedDataset, dp_rank: int, dp_world_size: int, **kwargs):
        super().__init__(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size, **kwargs)
        self.layout = dataset.layout

    def state_dict(self) -> dict[str, Any]:
        inner = {"layout": self.layout, "loader": super(ParallelAwareDataloader, self).state_dict()}
        return {self._rank_id: pickle.dumps(inner), "world_size": self.dp_world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        entries = {k: v for k, v in state_dict.items() if k.startswith("dp_rank_")}
        saved_world = int(state_dict.get("world_size", len(entries)))
        own = entries.get(self._rank_id)
        if own is not None:
            inner = pickle.loads(own)
            diff = self._layout_diff(inner["layout"], ignore=RESHARDABLE)
            if diff:
                raise ValueError(f"data loader state does not match this run's data settings: {'; '.join(diff)}")
            if saved_world == self.dp_world_size and not self._layout_diff(inner["layout"]):
                super(ParallelAwareDataloader, self).load_state_dict(inner["loader"])  # every reader goes on exactly
                return
        missing = [f"dp_rank_{r}" for r in range(saved_world) if f"dp_rank_{r}" not in entries]
        if missing:
            found = ", ".join(sorted(entries)) or "none"
            raise ValueError(
                f"data loader state saved by {saved_world} data-parallel ranks has no entry for {', '.join(missing)} "
                f"(found: {found}); resuming on another layout needs every rank's entry"
            )
        inners = [pickle.loads(entries[f"dp_rank_{r}"]) for r in range(saved_world)]
        saved_layout = inners[0]["layout"]
        diff = self._layout_diff(saved_layout, ignore=RESHARDABLE)
        if diff:
            raise ValueError(f"data loader state does not match this run's data settings: {'; '.join(diff)}")
        old_workers = max(int(saved_layout["num_workers"]), 1)
        old_states = [state for inner in inners for state in _reader_states(inner["loader"], old_workers)]
        summary = self.dataset.load_resharded(old_states, saved_world * old_workers)
        if self.dp_rank == 0:
            logger.info(summary)

    def _layout_diff(self, saved: dict, ignore: tuple[str, ...] = ()) -> list[str]:
        changed = [k for k, v in self.layout.items() if k not in ignore and saved.get(k) != v]
        return [f"{k} {saved.get(k)!r} -> {self.layout[k]!r}" for k in changed]


def _reader_states(loader_state: dict, workers: int) -> list[dict | None]:
    """The dataset state of each of a rank's readers (loader workers) in a ``StatefulDataLoader`` state."""
    if "_snapshot" not in loader_state:  # num_workers = 0: the dataset state is at the top
        return [loader_state.get("dataset_state")]
    snapshots = loader_state["_snapshot"]["_worker_snapshots"]
    return [(snapshots.get(f"worker_{w}") or {}).get("dataset_state") for w in range(workers)]


def _layout(cfg: DataConfig, specs: list[SourceSpec], encoder: TextEncoder, **sizes) -> dict:
    return {
        "sources": [(s.path, s.config_name, s.split, s.data_dir, s.data_files, s.text_column) for s in specs],
        "data_probs": [round(s.prob, 12) for s in specs],
        "seed": cfg.seed,
        "num_workers": cfg.num_workers,
        "shuffle_buffer": cfg.shuffle_buffer,
        "tokenize_batch_size": cfg.tokenize_batch_size,
        "separators": (encoder.bos_id, encoder.eos_id),
        "vocab_size": len(encoder.tokenizer),
        **sizes,
    }


def build_dataloader(
    cfg: DataConfig,
    tokenizer,
    *,
    dp_rank: int,
    dp_world_size: int,
    batch_size: int,
    seq_len: int,
    context_len: int | None = None,
    varlen: bool = False,
) -> FlameDataLoader:
    """The training data loader of one data-parallel rank.

    Yields dicts: ``input_ids`` int64 ``[B, seq_len]``; ``labels`` int64 ``[B, seq_len]`` (the same
    tokens: the model shifts; in varlen mode the first token of each document after the row's first
    is -100); varlen mode (``batch_size`` must be 1) adds ``cu_seqlens`` int32 ``[N+1]`` (document
    boundaries, documents cut every ``context_len`` tokens) and ``position_ids`` int64 ``[1, seq_len]``
    (restarting at 0 per segment). Every check (config, paths, emptiness, text column, tokenizer
    separators) runs here, before training starts.
    """
    if not 0 <= dp_rank < dp_world_size:
        raise ValueError(f"dp_rank {dp_rank} is not in [0, dp_world_size={dp_world_size})")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size ({batch_size}) and seq_len ({seq_len}) must be >= 1")
    if varlen and batch_size != 1:
        raise ValueError(
            f"varlen packing needs batch_size 1, got {batch_size}: each row already packs seq_len tokens of "
            f"several documents (raise seq_len instead)"
        )
    if context_len is not None and context_len < 1:
        raise ValueError(f"context_len must be >= 1 or None, got {context_len}")
    context_len = min(context_len or seq_len, seq_len)
    cfg.validate()
    specs = cfg.sources()
    encoder = TextEncoder(tokenizer, cfg.add_bos, cfg.add_eos)
    readers = dp_world_size * max(cfg.num_workers, 1)
    sources = [(spec, open_source(spec, readers)) for spec in specs]
    # batch_size is left out: a resumed run may regroup the same stream of rows into other batches
    sizes = dict(
        dp_world_size=dp_world_size, seq_len=seq_len, varlen=varlen, context_len=context_len if varlen else None
    )
    layout = _layout(cfg, specs, encoder, **sizes)
    dataset = PackedDataset(
        sources,
        encoder,
        cfg,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=batch_size,
        seq_len=seq_len,
        context_len=context_len,
        varlen=varlen,
        layout=layout,
    )
    kwargs: dict[str, Any] = dict(batch_size=None, num_workers=cfg.num_workers, pin_memory=cfg.pin_memory)
    if cfg.num_workers > 0 and cfg.prefetch_factor is not None:
        kwargs["prefetch_factor"] = cfg.prefetch_factor
    return FlameDataLoader(dataset, dp_rank=dp_rank, dp_world_size=dp_world_size, **kwargs)
