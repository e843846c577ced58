"""The ``[data]`` section of the job config and its per-source view.

Every list-valued field is a comma-separated string with one entry per source in ``dataset``
(or a single entry that applies to all of them); an empty entry or ``none`` means "not set".
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where the training text comes from and how it is read (the trainer's ``[data]`` section).

    Sizes (``batch_size``, ``seq_len``, ``context_len``, ``varlen``) come from the trainer's
    ``training`` section and are passed to :func:`flame.data.build_dataloader` as arguments.
    """

    dataset: str = "data/sample/data"
    """Comma-separated sources: Hugging Face hub dataset names or local paths (a jsonl/json/
    parquet/txt/arrow/csv file, a folder of such files, or a ``save_to_disk`` folder). The default
    is the offline corpus that ``python -m flame.tools.sample_data --out data/sample`` writes."""
    dataset_name: str | None = None
    """Comma-separated HF config names (``name`` of ``load_dataset``), one per source."""
    dataset_split: str = "train"
    """Comma-separated splits (ignored for a single local file, which is its own split)."""
    data_dir: str | None = None
    """Comma-separated ``data_dir`` arguments of ``load_dataset``."""
    data_files: str | None = None
    """Comma-separated ``data_files`` globs of ``load_dataset`` (one per source)."""
    data_probs: str | None = None
    """Comma-separated positive mixing weights, one per source, normalized: the share of *tokens*
    each source contributes. Required when there is more than one source."""
    streaming: bool = True
    """Stream the sources (``load_dataset(streaming=True)``); False loads them as Arrow first."""
    text_column: str = "text"
    """Comma-separated name of the column holding the document text, per source."""
    num_workers: int = 0
    """DataLoader worker processes per rank; each reads a disjoint part of every source."""
    prefetch_factor: int | None = None
    """Batches each worker prepares ahead (only with ``num_workers > 0``)."""
    pin_memory: bool = False
    seed: int = 42
    """Seeds the source mixing and the shuffle buffer."""
    shuffle_buffer: int = 0
    """Packed windows held in a seeded shuffle buffer per reader; 0 = windows in stream order."""
    add_bos: bool | None = None
    """Put the tokenizer's BOS before every document; None = when the tokenizer's own
    ``add_bos_token`` says so (e.g. Llama tokenizers)."""
    add_eos: bool = True
    """Put the tokenizer's EOS after every document."""
    tokenize_batch_size: int = 64
    """Documents per tokenizer call (batched, online tokenization)."""
    repeat: bool = True
    """Restart a source that runs out (a new epoch); False ends the stream when any source runs out."""

    def sources(self) -> list[SourceSpec]:
        """The validated per-source view of this config (raises ``ValueError`` naming the key)."""
        return parse_sources(self)

    def validate(self) -> None:
        """Check every field that needs no file access; one ``ValueError`` line naming the key."""
        parse_sources(self)
        for key in ("num_workers", "shuffle_buffer"):
            if getattr(self, key) < 0:
                raise ValueError(f"data.{key} must be >= 0, got {getattr(self, key)}")
        if self.tokenize_batch_size < 1:
            raise ValueError(f"data.tokenize_batch_size must be >= 1, got {self.tokenize_batch_size}")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor must be >= 1 or unset, got {self.prefetch_factor}")
        if self.add_bos is False and not self.add_eos:
            raise ValueError("data.add_bos and data.add_eos are both off: documents would run into each other")


@dataclass(frozen=True)
class SourceSpec:
    """One text source of the mix."""

    path: str
    config_name: str | None
    split: str
    data_dir: str | None
    data_files: str | None
    text_column: str
    prob: float
    streaming: bool


def _split(value: str | None) -> list[str | None]:
    if value is None:
        return [None]
    parts = [p.strip() for p in str(value).split(",")]
    return [None if p == "" or p.lower() == "none" else p for p in parts]


def _per_source(key: str, value: str | None, n: int) -> list[str | None]:
    parts = _split(value)
    if len(parts) == 1:
        return parts * n
    if len(parts) != n:
        raise ValueError(f"data.{key} has {len(parts)} entries ({value!r}) but data.dataset has {n} sources")
    return parts


def _parse_probs(value: str | None, n: int) -> list[float]:
    if value is None or str(value).strip() == "":
        if n > 1:
            raise ValueError(f"data.data_probs is required with {n} sources in data.dataset (one weight each)")
        return [1.0]
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != n:
        raise ValueError(f"data.data_probs has {len(parts)} weights ({value!r}) but data.dataset has {n} sources")
    try:
        probs = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"data.data_probs must be comma-separated numbers, got {value!r}") from None
    if not all(math.isfinite(p) and p > 0 for p in probs):
        raise ValueError(f"data.data_probs must all be positive and finite, got {value!r}")
    total = sum(probs)
    return [p / total for p in probs]


def parse_sources(cfg: DataConfig) -> list[SourceSpec]:
    """Split the comma-separated fields of ``cfg`` into one :class:`SourceSpec` per source."""
    paths = _split(cfg.dataset)
    if any(p is None for p in paths):
        raise ValueError(f"data.dataset has an empty entry: {cfg.dataset!r}")
    n = len(paths)
    probs = _parse_probs(cfg.data_probs, n)
    names = _per_source("dataset_name", cfg.dataset_name, n)
    splits = _per_source("dataset_split", cfg.dataset_split, n)
    dirs = _per_source("data_dir", cfg.data_dir, n)
    files = _per_source("data_files", cfg.data_files, n)
    columns = _per_source("text_column", cfg.text_column, n)
    if any(c is None for c in columns):
        raise ValueError(f"data.text_column has an empty entry: {cfg.text_column!r}")
    return [
        SourceSpec(p, name, split or "train", d, f, col, prob, cfg.streaming)
        for p, name, split, d, f, col, prob in zip(paths, names, splits, dirs, files, columns, probs)
    ]
