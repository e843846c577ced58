"""Open text sources with ``datasets`` and read one reader's share of a source as token documents.

A *reader* is one (data-parallel rank, loader worker) pair; ``num_readers = dp_world_size x
max(num_workers, 1)`` readers split every source with ``datasets.distributed.split_dataset_by_node``:
whole shards (files) when the shard count is a multiple of ``num_readers``, otherwise every
``num_readers``-th example (reader ``g`` keeps examples ``g, g + num_readers, ...``), so a
one-file dataset still spreads over all ranks and workers.
"""

from __future__ import annotations

import bz2
import copy
import gzip
import json
import lzma
from pathlib import Path

import numpy as np

from flame.data.config import SourceSpec
from flame.data.tokenize import TextEncoder
from flame.paths import looks_local, missing

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".arrow": "arrow", ".csv": "csv"}
_COMPRESSION = {".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4"}
_SAMPLE_HINT = " (the offline sample corpus is written by: python -m flame.tools.sample_data --out data/sample)"


class SourceExhausted(Exception):
    """A source ran out of documents and ``repeat`` is off: the stream ends."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _builder_for(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    return _BUILDERS.get(suffixes[-1]) if suffixes else None


def _load(spec: SourceSpec):
    """``datasets.Dataset`` or ``IterableDataset`` for one source (no reading beyond metadata)."""
    import datasets

    path = Path(spec.path).expanduser()
    if path.is_file():
        builder = _builder_for(path)
        if builder is None:
            raise ValueError(f"data source {path}: unknown file type (use one of {', '.join(_BUILDERS)})")
        return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=spec.streaming)
    if path.is_dir():
        if (path / "state.json").exists() and (path / "dataset_info.json").exists():
            return datasets.load_from_disk(str(path))  # Dataset.save_to_disk
        if (path / "dataset_dict.json").exists():
            dd = datasets.load_from_disk(str(path))  # DatasetDict.save_to_disk
            if spec.split not in dd:
                raise ValueError(f"data source {path}: no split '{spec.split}' (splits: {', '.join(dd)})")
            return dd[spec.split]
    elif looks_local(spec.path):  # a local path with a typo: fail now, not after the hub's retries
        hint = _SAMPLE_HINT if "sample" in spec.path else ""
        raise FileNotFoundError(f"data source not found: {spec.path} ({missing(spec.path)}){hint}")
    # a folder of data files, or a hub dataset name
    kwargs = dict(split=spec.split, streaming=spec.streaming, data_dir=spec.data_dir, data_files=spec.data_files)
    return datasets.load_dataset(str(path) if path.is_dir() else spec.path, spec.config_name, **kwargs)


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _json_files(spec: SourceSpec) -> list[Path]:
    """The local JSON / JSON Lines files of ``spec`` (none for a hub dataset)."""
    path = Path(spec.path).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return [f for f in files if _builder_for(f) == "json"]


def _json_error(file: Path) -> str | None:
    """``"<file> line N is not valid JSON (why)"`` for the first broken line of ``file`` (a JSON Lines file, or
    one JSON document when it starts with ``[``); None when it parses or cannot be read here."""
    suffix = file.suffix.lower()
    if suffix not in _OPENERS and _builder_for(file) != "json" or suffix in (".zst", ".zstd", ".lz4"):
        return None
    try:
        with _OPENERS.get(suffix, open)(file, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    if text.lstrip().startswith("["):  # one JSON document
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            return f"{file} line {err.lineno} is not valid JSON ({err.msg}, column {err.colno})"
        return None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return f"{file} line {lineno} is not valid JSON ({err.msg}, column {err.colno})"
    return None


def broken_json_line(spec: SourceSpec) -> str | None:
    """Where the local JSON files of ``spec`` first fail to parse (file and line), or None."""
    for file in _json_files(spec):
        where = _json_error(file)
        if where is not None:
            return where
    return None


def _read_error(spec: SourceSpec, what: str, e: BaseException) -> ValueError:
    """One line for a source that fails to load or read: the broken JSON file and line when there is one."""
    where = broken_json_line(spec)
    if where is not None:
        return ValueError(f"data source '{spec.path}': {where}")
    return ValueError(f"data source '{spec.path}' {what}: {_first_line(e)}")


def open_source(spec: SourceSpec, num_readers: int):
    """Open ``spec`` as a ``datasets.IterableDataset`` and check it before training starts.

    Raises (one line each): ``FileNotFoundError`` for a missing local path, ``ValueError`` when the
    source cannot be loaded, is empty, or has no ``spec.text_column`` (naming the columns found).
    """
    import datasets

    try:
        ds = _load(spec)
    except StopIteration:  # what `datasets` raises when it infers the features of an empty file
        raise ValueError(f"data source '{spec.path}' (split {spec.split}) is empty") from None
    except Exception as e:  # noqa: BLE001 - hub/network/builder errors: one clear line
        if str(e).startswith("data source"):  # ours, already one line
            raise
        where = "" if Path(spec.path).expanduser().exists() else " (not a local path; tried the Hugging Face hub)"
        raise _read_error(spec, f"could not be loaded{where}", e) from e
    if isinstance(ds, datasets.Dataset):
        if len(ds) == 0:
            raise ValueError(f"data source '{spec.path}' (split {spec.split}) is empty")
        ds = ds.to_iterable_dataset(num_shards=num_readers if len(ds) >= num_readers else 1)
    _check_first_example(ds, spec)
    return ds


def _check_first_example(ds, spec: SourceSpec) -> None:
    col = spec.text_column
    if ds.features is not None and col not in ds.features:
        raise ValueError(f"data source '{spec.path}' has no text column '{col}' (columns: {', '.join(ds.features)})")
    it = iter(ds)
    seen = 0
    try:
        first = next(it, None)
        if first is None:
            raise ValueError(f"data source '{spec.path}' (split {spec.split}) is empty")
        if col not in first:
            raise ValueError(f"data source '{spec.path}' has no text column '{col}' (columns: {', '.join(first)})")
        example = first
        while example is not None:  # the first document with text (every one, when all are empty)
            text = example.get(col)
            if text is not None and not isinstance(text, str):
                raise ValueError(f"data source '{spec.path}': column '{col}' holds {type(text).__name__}, not text")
            seen += 1
            if text:
                break
            example = next(it, None)
    except ValueError as e:
        if str(e).startswith("data source"):  # ours, already one line
            raise
        raise _read_error(spec, "could not be read", e) from e
    except Exception as e:  # noqa: BLE001 - a corrupt/unparsable file
        raise _read_error(spec, "could not be read", e) from e
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if example is None:
        raise ValueError(f"data source '{spec.path}' has no text: all {seen} documents have an empty '{col}'")


class DocumentStream:
    """One reader's share of one source, as tokenized documents (``[bos] ids [eos]`` arrays).

    Texts are read and tokenized ``batch_docs`` at a time. The position ``(epoch, hf_state, index)``
    names the next document exactly: ``hf_state`` is the ``datasets`` state at the start of the
    current batch (None = start of the epoch) and ``index`` the document within that batch; seeking
    re-reads and re-tokenizes that one batch. A source that runs out starts its next epoch
    (``repeat``), whose shard order ``datasets`` reshuffles with the epoch number.
    """

    def __init__(
        self,
        dataset,
        spec: SourceSpec,
        encoder: TextEncoder,
        reader: int,
        num_readers: int,
        batch_docs: int,
        repeat: bool,
        who: str,
    ):
        self.dataset, self.spec, self.encoder = dataset, spec, encoder
        self.reader, self.num_readers, self.who = reader, num_readers, who
        self.batch_docs, self.repeat = batch_docs, repeat
        self._start(epoch=0, hf_state=None)

    def _start(self, epoch: int, hf_state: dict | None) -> None:
        from datasets.distributed import split_dataset_by_node

        view = split_dataset_by_node(self.dataset, rank=self.reader, world_size=self.num_readers)
        view.set_epoch(epoch)  # `view` owns a fresh epoch counter: no other reader sees this
        if hf_state is not None:
            view.load_state_dict(copy.deepcopy(hf_state))
        self._epoch, self._view = epoch, view
        self._batches = view.iter(batch_size=self.batch_docs)
        self._next_state = hf_state  # datasets state at the start of the batch read next
        self._batch_state: dict | None = hf_state
        self._docs: list[np.ndarray] = []
        self._index = 0
        self._fresh_epoch = hf_state is None  # an empty fresh epoch means this reader has no data

    def position(self) -> tuple:
        """Where the next document comes from: ``(epoch, hf_state, index)`` (immutable parts)."""
        return (self._epoch, self._batch_state, self._index)

    def seek(self, position: tuple) -> None:
        epoch, hf_state, index = position
        self._start(epoch, hf_state)
        if hf_state is not None or index > 0:
            self._fill()
            self._index = index

    def _fill(self) -> None:
        """Read and tokenize the next batch of texts (starting new epochs as needed)."""
        col = self.spec.text_column
        while True:
            try:
                batch = next(self._batches)
            except StopIteration:
                if self._fresh_epoch:
                    raise RuntimeError(
                        f"data source '{self.spec.path}' gave no documents to {self.who}: it has fewer "
                        f"non-empty documents than the {self.num_readers} readers (dp ranks x loader workers)"
                    ) from None
                if not self.repeat:
                    raise SourceExhausted(self.spec.path) from None
                self._start(self._epoch + 1, None)
                continue
            except Exception as e:  # noqa: BLE001 - e.g. a file that fails to parse: name the file and line
                raise _read_error(self.spec, "could not be read", e) from e
            if col not in batch:
                raise ValueError(f"data source '{self.spec.path}' has no text column '{col}' (columns: {list(batch)})")
            texts = batch[col]
            if any(t is not None and not isinstance(t, str) for t in texts):
                raise ValueError(f"data source '{self.spec.path}': column '{col}' holds non-text values")
            self._batch_state, self._next_state = self._next_state, self._view.state_dict()
            self._docs, self._index = self.encoder(texts), 0  # empty texts are dropped
            if self._docs:
                self._fresh_epoch = False
                return

    def next(self) -> np.ndarray:
        """The next document's token ids ``[len]`` (raises :class:`SourceExhausted` at the end)."""
        while self._index >= len(self._docs):
            self._fill()
        doc = self._docs[self._index]
        self._index += 1
        return doc
