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
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info
from torchtitan.components.dataloader import ParallelAwareDataloader

from flame.data.config import DataConfig, SourceSpec
from flame.data.mixing import Mixer
from flame.data.packing import Packer, WindowShuffler, collate
from flame.data.sources import DocumentStream, SourceExhausted, open_source
from flame.data.tokenize import TextEncoder

STATE_VERSION = 1


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
        self._live: tuple[int, Packer, WindowShuffler | None] | None = None
        self._pending: dict | None = None

    def _reader(self) -> tuple[int, int, str]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader, readers = self.dp_rank * workers + worker, self.dp_world_size * workers
        who = (
            f"data reader {reader} of {readers} (dp rank {self.dp_rank} of {self.dp_world_size}, "
            f"loader worker {worker} of {workers})"
        )
        return reader, readers, who

    def _build(self) -> tuple[int, Packer, WindowShuffler | None]:
        reader, readers, who = self._reader()
        cfg = self.cfg
        streams = [
            DocumentStream(ds, spec, self.encoder, reader, readers, cfg.tokenize_batch_size, cfg.repeat, who)
            for spec, ds in self.sources
        ]
        mixer = Mixer(streams, [spec.prob for spec, _ in self.sources], cfg.seed, reader)
        packer = Packer(mixer, self.seq_len)
        shuffler = WindowShuffler(packer, cfg.shuffle_buffer, cfg.seed, reader) if cfg.shuffle_buffer else None
        state, self._pending = self._pending, None
        if state is not None and state["packer"] is not None:
            if state["reader"] != reader:
                raise ValueError(f"data loader state of reader {state['reader']} was given to reader {reader}")
            packer.seek(state["packer"])
            if shuffler is not None:
                shuffler.load_state_dict(state["shuffle"])
        return reader, packer, shuffler

    def __iter__(self):
        self._live = None  # until the new iteration starts, the state is the pending (loaded) one
        return self._batches()

    def _batches(self):
        if get_worker_info() is not None:
            import fsspec.asyn

            fsspec.asyn.reset_lock()  # a forked worker must not share the parent's fsspec event loop
        self._live = self._build()
        _, packer, shuffler = self._live
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
            return {"version": STATE_VERSION, "reader": None, "packer": None, "shuffle": None}
        reader, packer, shuffler = self._live
        return {
            "version": STATE_VERSION,
            "reader": reader,
            "packer": packer.position(),
            "shuffle": shuffler.state_dict() if shuffler is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')} is not {STATE_VERSION}")
        self._pending = state
        self._live = None


class FlameDataLoader(ParallelAwareDataloader):
    """torchtitan's data-parallel-aware ``StatefulDataLoader`` over a :class:`PackedDataset`.

    ``state_dict()`` is ``{"dp_rank_<r>": pickled state, "world_size": dp_world_size}`` (what
    torchtitan's ``CheckpointManager`` stores per rank). Loading a state saved with another
    data-parallel degree, another data layout, or without this rank's entry raises one clear line.
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
        saved_world = state_dict.get("world_size")
        if saved_world is not None and int(saved_world) != self.dp_world_size:
            raise ValueError(
                f"data loader state was saved with {int(saved_world)} data-parallel ranks but this run has "
                f"{self.dp_world_size}: the data stream cannot be resharded; resume with the same data-parallel "
                f"degree (or leave the data loader state out to restart the data)"
            )
        if self._rank_id not in state_dict:
            found = sorted(k for k in state_dict if k.startswith("dp_rank_"))
            raise ValueError(f"data loader state has no entry for {self._rank_id} (found: {', '.join(found)})")
        inner = pickle.loads(state_dict[self._rank_id])
        saved = inner["layout"]
        diff = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in self.layout.items() if saved.get(k) != v]
        if diff:
            raise ValueError(f"data loader state does not match this run's data settings: {'; '.join(diff)}")
        super(ParallelAwareDataloader, self).load_state_dict(inner["loader"])


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
