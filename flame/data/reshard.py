"""Resuming the data stream on another number of readers (data-parallel ranks x loader workers).

A checkpoint holds every reader's position. When a run resumes with another number of readers
``R'`` (other data-parallel degree or ``num_workers``), each old reader's position is turned into
what it still owed of the current epoch, and that is dealt out to the new readers:

* per source, the old reader's *remaining pieces*: its share of the source from its position to the
  end of its epoch (plus whole epochs for an old reader that was behind the furthest one, so that
  every old share has been read the same number of times). A piece is
  ``(reader, readers, epoch, hf_state, first, stride)``: the non-empty documents of reader
  ``reader``'s share (in a layout of ``readers``) in ``epoch``, counted ``k = 0, 1, ...`` from the
  ``datasets`` state ``hf_state``, those with ``k = first + stride * t``. New reader ``h`` takes
  every ``R'``-th document of each piece (``first + stride * h``, stride ``stride * R'``), so a
  piece is split over all new readers and no document goes to two of them;
* the unread end of the document the old reader was packing, and the windows in its shuffle
  buffer, go to new reader ``old % R'`` and come out first (a *carry*).

After its pieces a new reader continues with its own share (reader ``h`` of ``R'``) from the next
epoch. So across the change every document of the epoch in progress is read exactly once and
every later epoch is the new layout's; the batches (which documents share a window, where the
windows are cut, the mixing order) differ from a run that never changed. A second change while
pieces are still being read splits the remaining pieces again in the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from flame.data.config import SourceSpec
from flame.data.sources import DocumentStream, SourceExhausted
from flame.data.tokenize import TextEncoder

Piece = tuple  # (reader, readers, epoch, hf_state, first, stride)


class PieceStream:
    """One new reader's documents of one source: its pieces in order, then its own share from ``native_epoch``.

    Same interface as :class:`~flame.data.sources.DocumentStream` (``next``, ``position``, ``seek``);
    the position is ``("piece", index, remaining piece)`` or ``("native", DocumentStream position)``.
    """

    def __init__(
        self,
        pieces: list[Piece],
        native_epoch: int,
        dataset_for: Callable[[int], Any],
        spec: SourceSpec,
        encoder: TextEncoder,
        reader: int,
        num_readers: int,
        batch_docs: int,
        repeat: bool,
        who: str,
    ):
        self.pieces, self.native_epoch, self.dataset_for = [tuple(p) for p in pieces], native_epoch, dataset_for
        self.spec, self.encoder, self.reader, self.num_readers = spec, encoder, reader, num_readers
        self.batch_docs, self.repeat, self.who = batch_docs, repeat, who
        self._native: DocumentStream | None = None
        self._index = 0
        if self.pieces:
            self._open(self.pieces[0])

    # ------------------------------------------------------------------ one piece

    def _open(self, piece: Piece) -> None:
        from datasets.distributed import split_dataset_by_node

        reader, readers, epoch, hf_state, first, stride = piece
        view = split_dataset_by_node(self.dataset_for(readers), rank=reader, world_size=readers)
        view.set_epoch(epoch)
        if hf_state is not None:
            view.load_state_dict(copy.deepcopy(hf_state))
        self._piece, self._view = piece, view
        self._batches = view.iter(batch_size=self.batch_docs)
        self._next_state = hf_state  # datasets state at the start of the batch read next
        self._batch_state, self._batch_k = hf_state, 0  # state and k at the start of the current batch
        self._k = 0  # k of the first document of the batch read next
        self._next_k = first  # k of the next document to give out
        self._docs: list[tuple[int, np.ndarray]] = []
        self._ended = False

    def _fill(self) -> bool:
        """Read the next batch that holds a document of the piece; False at the end of the piece."""
        reader, readers, epoch, _, first, stride = self._piece
        col = self.spec.text_column
        while not self._ended:
            try:
                batch = next(self._batches)
            except StopIteration:
                self._ended = True
                return False
            texts = [t for t in batch[col] if t]  # what the encoder keeps; k counts these
            if any(not isinstance(t, str) for t in texts):
                raise ValueError(f"data source '{self.spec.path}': column '{col}' holds non-text values")
            self._batch_state, self._next_state = self._next_state, self._view.state_dict()
            self._batch_k, k0 = self._k, self._k
            self._k += len(texts)
            ks = [k for k in range(max(self._next_k, k0), self._k) if (k - first) % stride == 0]
            if ks:
                self._docs = list(zip(ks, self.encoder([texts[k - k0] for k in ks])))
                return True
        return False

    def _piece_next(self) -> np.ndarray | None:
        if not self._docs and not self._fill():
            return None
        k, doc = self._docs.pop(0)
        self._next_k = k + self._piece[5]
        return doc

    def _remaining(self) -> Piece:
        """The rest of the current piece, as a piece that starts at the current batch."""
        reader, readers, epoch, _, _, stride = self._piece
        return (reader, readers, epoch, self._batch_state, self._next_k - self._batch_k, stride)

    # ------------------------------------------------------------------ the stream

    def _native_stream(self) -> DocumentStream:
        if self._native is None:
            self._native = DocumentStream(
                self.dataset_for(self.num_readers), self.spec, self.encoder, self.reader, self.num_readers,
                self.batch_docs, self.repeat, self.who,
            )  # fmt: skip
            self._native.seek((self.native_epoch, None, 0))
        return self._native

    def position(self) -> tuple:
        if self._index < len(self.pieces):
            return ("piece", self._index, self._remaining())
        return ("native", self._native_stream().position() if self.repeat else None)

    def seek(self, position: tuple) -> None:
        if position[0] == "piece":
            _, self._index, piece = position
            self._open(piece)
            return
        self._index = len(self.pieces)
        if position[1] is not None:
            self._native_stream().seek(position[1])

    def next(self) -> np.ndarray:
        while self._index < len(self.pieces):
            doc = self._piece_next()
            if doc is not None:
                return doc
            self._index += 1
            if self._index < len(self.pieces):
                self._open(self.pieces[self._index])
        if not self.repeat:
            raise SourceExhausted(self.spec.path)
        return self._native_stream().next()

    def remaining(self, reader: int, readers: int) -> tuple[list[Piece], int]:
        """What this stream still owes before its next epoch: (pieces, epoch of its own share)."""
        if self._index < len(self.pieces):  # its own share of native_epoch is not begun: owed only if others began it
            return [self._remaining(), *self.pieces[self._index + 1 :]], self.native_epoch - 1
        if not self.repeat:
            return [], self.native_epoch - 1
        epoch, hf_state, index = self._native_stream().position()
        return [(reader, readers, epoch, hf_state, index, 1)], epoch


def remaining_pieces(stream, reader: int, readers: int) -> tuple[list[Piece], int]:
    """(pieces, epoch) an old reader's stream of one source still owes (see :meth:`PieceStream.remaining`)."""
    if isinstance(stream, PieceStream):
        return stream.remaining(reader, readers)
    epoch, hf_state, index = stream.position()
    return [(reader, readers, epoch, hf_state, index, 1)], epoch


def plan(
    old: list[tuple[list[tuple[list[Piece], int]], list[np.ndarray], list]],
    old_readers: int,
    new_readers: int,
    mine: list[int],
) -> dict[int, dict]:
    """Deal the old readers' debts out to the new readers ``mine`` (reader ids of ``new_readers``).

    ``old[g] = (per source (pieces, epoch), carry fragments, shuffle-buffer windows)`` of old reader
    ``g``. Returns per new reader ``{"sources": [{"pieces", "native_epoch"}], "carry", "windows"}``.
    """
    n_sources = len(old[0][0])
    out = {h: {"sources": [], "carry": [], "windows": []} for h in mine}
    for i in range(n_sources):
        last = max(per_source[i][1] for per_source, _, _ in old)
        owed: list[Piece] = []
        for g, (per_source, _, _) in enumerate(old):
            pieces, epoch = per_source[i]
            owed += pieces + [(g, old_readers, e, None, 0, 1) for e in range(epoch + 1, last + 1)]
        for h in mine:
            split = [(r, rs, e, st, first + stride * h, stride * new_readers) for r, rs, e, st, first, stride in owed]
            out[h]["sources"].append({"pieces": split, "native_epoch": last + 1})
    for g, (_, carry, windows) in enumerate(old):
        if g % new_readers in out:
            out[g % new_readers]["carry"] += carry
            out[g % new_readers]["windows"] += windows
    return out
