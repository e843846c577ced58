"""Seeded mixing of several document streams by token share.

Each pick takes the source with the smallest jittered "virtual time"
``(tokens_taken[i] + u_i * mean_doc_len) / prob[i]`` where ``u_i`` is a seeded uniform draw
(weighted fair queueing with random tie-breaking). Token shares follow ``probs`` within about
one document per source at any point of the stream, and the order varies with the seed. The
state is a pick counter and per-source counts: the draws come from a counter-based generator,
so there is no RNG object to save.
"""

from __future__ import annotations

import numpy as np

from flame.data.sources import DocumentStream

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(*keys: int) -> float:
    """A uniform float in [0, 1) that depends only on the integer ``keys`` (counter-based RNG)."""
    x = 0
    for k in keys:
        x = _splitmix64(x ^ (k & _MASK))
    return (x >> 11) * (1.0 / (1 << 53))


class Mixer:
    """Documents from ``streams`` mixed so each stream's token share follows ``probs``."""

    def __init__(self, streams: list[DocumentStream], probs: list[float], seed: int, reader: int):
        self.streams, self.probs, self.seed, self.reader = streams, probs, seed, reader
        self._picks = 0
        self._tokens = [0] * len(streams)
        self._docs = [0] * len(streams)

    def position(self) -> tuple:
        """``(picks, tokens per source, docs per source, stream positions)``: where the next document comes from."""
        return (self._picks, tuple(self._tokens), tuple(self._docs), tuple(s.position() for s in self.streams))

    def seek(self, position: tuple) -> None:
        picks, tokens, docs, stream_positions = position
        self._picks, self._tokens, self._docs = picks, list(tokens), list(docs)
        for stream, pos in zip(self.streams, stream_positions):
            stream.seek(pos)

    def _choose(self) -> int:
        n = len(self.streams)
        if n == 1:
            return 0
        mean_len = sum(self._tokens) / max(sum(self._docs), 1)
        scores = [
            (self._tokens[i] + uniform(self.seed, self.reader, self._picks, i) * mean_len) / self.probs[i]
            for i in range(n)
        ]
        return min(range(n), key=scores.__getitem__)

    def next(self) -> np.ndarray:
        """The next document's token ids ``[len]`` (raises ``SourceExhausted`` when a source runs out)."""
        i = self._choose()
        doc = self.streams[i].next()
        self._picks += 1
        self._tokens[i] += len(doc)
        self._docs[i] += 1
        return doc
