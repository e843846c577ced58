"""Pack a document stream into fixed ``seq_len`` windows (no padding) and collate batches.

Documents (``[bos] ids [eos]``) are concatenated and cut every ``seq_len`` tokens; a document
that does not fit continues in the next window. Each window remembers where documents start in
it, which the varlen collation turns into ``cu_seqlens`` / ``position_ids`` / masked labels.

The packer's position is ``(mixer position before the current document, offset into it)``, so
the tokens left over between windows are part of the state without storing them. After a resume
on another number of readers a packer may also start with a *carry*: the unread ends of documents
that other readers had begun, emitted first as continuations (see ``flame/data/reshard.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fla.utils.constants import IGNORE_INDEX
from flame.data.mixing import Mixer
from flame.data.sources import SourceExhausted


@dataclass
class Window:
    """``seq_len`` packed tokens and the offsets where documents begin inside them."""

    tokens: np.ndarray  # [seq_len] int64
    doc_starts: list[int]  # increasing offsets in [0, seq_len); 0 only if a document starts there


class Packer:
    """Cuts the mixed document stream into windows of ``seq_len`` tokens."""

    def __init__(self, mixer: Mixer, seq_len: int):
        self.mixer, self.seq_len = mixer, seq_len
        self._doc: np.ndarray | None = None
        self._doc_position: tuple | None = None  # mixer position before self._doc was taken
        self._offset = 0
        self._carry: list[np.ndarray] = []  # continuations emitted before the mixed stream

    def set_carry(self, fragments: list[np.ndarray]) -> None:
        """Emit ``fragments`` (ends of documents begun elsewhere; no document starts in them) first."""
        self._carry = [np.asarray(f, dtype=np.int64) for f in fragments if len(f)]

    def carry(self) -> list[np.ndarray]:
        """The carry not emitted yet."""
        return list(self._carry)

    def leftover(self) -> list[np.ndarray]:
        """The carry and the unread end of the current document: what this packer owes before its mixer."""
        rest = self.carry()
        if self._doc is not None and self._offset < len(self._doc):
            rest.append(self._doc[self._offset :])
        return rest

    def position(self) -> tuple:
        """``(mixer position, offset)``: the next token is ``offset`` into the document at that position."""
        if self._doc is None or self._offset == len(self._doc):
            return (self.mixer.position(), 0)
        return (self._doc_position, self._offset)

    def seek(self, position: tuple) -> None:
        mixer_position, offset = position
        self.mixer.seek(mixer_position)
        self._doc, self._doc_position, self._offset = None, None, 0
        if offset:
            self._take_doc()
            self._offset = offset

    def _take_doc(self) -> None:
        self._doc_position = self.mixer.position()
        self._doc = self.mixer.next()
        self._offset = 0

    def next_window(self) -> Window:
        """The next ``seq_len`` tokens (raises ``SourceExhausted`` when the stream ends first)."""
        out = np.empty(self.seq_len, dtype=np.int64)
        starts: list[int] = []
        filled = 0
        while self._carry and filled < self.seq_len:
            fragment = self._carry[0]
            n = min(self.seq_len - filled, len(fragment))
            out[filled : filled + n] = fragment[:n]
            filled += n
            if n == len(fragment):
                self._carry.pop(0)
            else:
                self._carry[0] = fragment[n:]
        while filled < self.seq_len:
            if self._doc is None or self._offset == len(self._doc):
                self._take_doc()
            if self._offset == 0:
                starts.append(filled)
            n = min(self.seq_len - filled, len(self._doc) - self._offset)
            out[filled : filled + n] = self._doc[self._offset : self._offset + n]
            filled += n
            self._offset += n
        return Window(out, starts)


class WindowShuffler:
    """A seeded shuffle buffer of ``size`` windows: each output is a uniform pick from the buffer.

    Its state holds the buffered windows themselves (``size x seq_len`` tokens) and the generator.
    """

    def __init__(self, packer: Packer, size: int, seed: int, reader: int):
        self.packer, self.size = packer, size
        self._rng = np.random.Generator(np.random.PCG64([seed, reader]))
        self._buffer: list[Window] = []
        self._ended = False

    def state_dict(self) -> dict:
        tokens = np.stack([w.tokens for w in self._buffer]) if self._buffer else np.zeros((0, 0), np.int64)
        return {
            "tokens": torch.from_numpy(tokens),
            "doc_starts": [list(w.doc_starts) for w in self._buffer],
            "rng": self._rng.bit_generator.state,
            "ended": self._ended,
        }

    def load_state_dict(self, state: dict) -> None:
        tokens = state["tokens"].numpy()
        self._buffer = [Window(tokens[i].copy(), list(s)) for i, s in enumerate(state["doc_starts"])]
        self._rng.bit_generator.state = state["rng"]
        self._ended = state["ended"]

    def windows(self) -> list[Window]:
        """The windows in the buffer."""
        return list(self._buffer)

    def add(self, windows: list[Window]) -> None:
        """Put ``windows`` into the buffer (it drains to ``size`` before taking new ones)."""
        self._buffer += windows

    def next_window(self) -> Window:
        while not self._ended and len(self._buffer) < self.size:
            try:
                self._buffer.append(self.packer.next_window())
            except SourceExhausted:
                self._ended = True
        if not self._buffer:
            raise SourceExhausted("shuffle buffer drained")
        i = int(self._rng.integers(len(self._buffer)))
        self._buffer[i], self._buffer[-1] = self._buffer[-1], self._buffer[i]
        return self._buffer.pop()


def varlen_fields(window: Window, context_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cu_seqlens`` int32 ``[N+1]``, ``position_ids`` int64 ``[T]``, ``labels`` int64 ``[T]`` of one window.

    Segments are the documents inside the window, each cut every ``context_len`` tokens; positions
    restart at 0 per segment; the label of a document's first token (other than at offset 0) is
    ``IGNORE_INDEX`` so no loss term predicts across a document boundary.
    """
    seq_len = len(window.tokens)
    doc_bounds = [s for s in window.doc_starts if s > 0]
    edges = [0, *doc_bounds, seq_len]
    cu = [start + k for start, end in zip(edges[:-1], edges[1:]) for k in range(0, end - start, context_len)]
    cu.append(seq_len)
    cu_seqlens = torch.tensor(cu, dtype=torch.int32)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths)
    position_ids = torch.arange(seq_len, dtype=torch.long) - starts
    labels = torch.from_numpy(window.tokens.copy())
    if doc_bounds:
        labels[torch.tensor(doc_bounds)] = IGNORE_INDEX
    return cu_seqlens, position_ids, labels


def collate(windows: list[Window], varlen: bool, context_len: int) -> dict[str, torch.Tensor]:
    """Batch ``windows`` -> ``input_ids``/``labels`` ``[B, T]`` (+ ``cu_seqlens`` ``[N+1]``,
    ``position_ids`` ``[1, T]`` in varlen mode, where ``B == 1``)."""
    input_ids = torch.from_numpy(np.stack([w.tokens for w in windows]))
    if not varlen:
        return {"input_ids": input_ids, "labels": input_ids.clone()}
    (window,) = windows
    cu_seqlens, position_ids, labels = varlen_fields(window, context_len)
    return {
        "input_ids": input_ids,
        "labels": labels[None],
        "cu_seqlens": cu_seqlens,
        "position_ids": position_ids[None],
    }
