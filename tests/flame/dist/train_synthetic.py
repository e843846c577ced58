"""torchrun helper: ``flame.train.main`` on a synthetic, learnable token stream.

Usage: ``python -m torch.distributed.run --nproc_per_node=N tests/flame/dist/train_synthetic.py
--job.config_file configs/tiny_cpu.toml [--section.key value ...]``.

Each sequence counts up by one from a random start (mod min(vocab, 256)), so a tiny model
learns it in a few steps. Sequence ``i`` of the stream is a function of ``(data.seed, i)`` only, and
the k-th micro-batch of data-parallel rank r holds sequences ``(k * world + r) * B ...``:
for a fixed global batch the union over ranks and micro-batches of one step is the same
set of sequences whatever the number of ranks.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from flame.train import main  # noqa: E402


class CountingStream:
    """Batches ``{"input_ids", "labels"}`` of shape [B, T] (plus ``cu_seqlens``/``position_ids`` if varlen)."""

    def __init__(self, vocab: int, batch_size: int, seq_len: int, dp_rank: int, dp_world: int, seed: int, varlen: bool):
        self.vocab, self.batch_size, self.seq_len = vocab, batch_size, seq_len
        self.dp_rank, self.dp_world, self.seed, self.varlen = dp_rank, dp_world, seed, varlen
        self.k = 0

    def sequence(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(0, self.vocab, (1,), generator=g))
        return (start + torch.arange(self.seq_len)) % self.vocab

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        first = (self.k * self.dp_world + self.dp_rank) * self.batch_size
        self.k += 1
        ids = torch.stack([self.sequence(first + j) for j in range(self.batch_size)])
        batch = {"input_ids": ids, "labels": ids.clone()}
        if self.varlen:
            half = self.seq_len // 2
            batch["cu_seqlens"] = torch.tensor([0, half, self.seq_len], dtype=torch.int32)
            batch["position_ids"] = torch.cat([torch.arange(half), torch.arange(self.seq_len - half)])[None]
            batch["labels"][0, half] = -100  # no target across the document boundary
        return batch


def counting_stream(job, dp_rank: int, dp_world: int) -> CountingStream:
    with open(job.model.config) as f:
        vocab = min(json.load(f)["vocab_size"], 256)  # a small alphabet: learnable in a few steps
    t = job.training
    return CountingStream(vocab, t.batch_size, t.seq_len, dp_rank, dp_world, job.data.seed, t.varlen)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], counting_stream))
