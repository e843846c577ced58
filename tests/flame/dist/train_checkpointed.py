"""torchrun helper: ``flame.train.main`` on the real data pipeline, recording the data stream.

Usage: ``python -m torch.distributed.run --nproc_per_node=N tests/flame/dist/train_checkpointed.py
--job.config_file configs/tiny_cpu.toml [--section.key value ...]``.

Each rank appends one line per batch it hands to the trainer to
``<dump_folder>/batches-rank<R>.jsonl``: ``{"launch": pid of rank 0's launch, "sha": digest of
input_ids and labels}``, so a test can compare the data stream of an interrupted and resumed
run with an uninterrupted one. The loader's ``state_dict``/``load_state_dict`` pass through.
``FLAME_TEST_BATCH_DELAY=<seconds>`` paces the batches, so that a test polling the metrics can
kill the run at the step it picked on a busy machine.

Test hook: with ``FLAME_TEST_DIE_IN_SAVE=N`` the process that writes DCP's ``.metadata`` dies
(``os._exit``) after every rank wrote its data for ``step-N`` and before ``.metadata`` exists:
a save killed half-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from flame.train import build_data, load_model_config, main  # noqa: E402


class RecordingLoader:
    """Wraps the flame data loader; appends a digest of every batch to a per-rank file."""

    def __init__(self, loader, path: str):
        self.loader, self.path, self.launch = loader, path, os.getppid()
        self.delay = float(os.environ.get("FLAME_TEST_BATCH_DELAY", "0"))

    def __iter__(self):
        with open(self.path, "a") as f:
            for batch in self.loader:
                time.sleep(self.delay)
                sha = hashlib.sha256(batch["input_ids"].numpy().tobytes() + batch["labels"].numpy().tobytes())
                f.write(json.dumps({"launch": self.launch, "sha": sha.hexdigest()[:16]}) + "\n")
                f.flush()
                yield batch

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.loader.load_state_dict(state_dict)


def recorded_data(job, dp_rank: int, dp_world: int) -> RecordingLoader:
    vocab = getattr(load_model_config(job), "vocab_size", None)
    loader = build_data(job, dp_rank, dp_world, vocab)
    path = os.path.join(job.job.dump_folder, f"batches-rank{os.environ.get('RANK', '0')}.jsonl")
    os.makedirs(job.job.dump_folder, exist_ok=True)
    return RecordingLoader(loader, path)


def die_in_save(step: int) -> None:
    """Make DCP's metadata write of ``step-<step>`` kill the process instead."""
    from torch.distributed.checkpoint import FileSystemWriter

    finish = FileSystemWriter.finish

    def finish_or_die(self, metadata, results):
        if os.path.basename(os.path.normpath(str(self.path))) == f"step-{step}":
            print(f"test hook: dying while saving step-{step}", file=sys.stderr, flush=True)
            os._exit(9)
        return finish(self, metadata, results)

    FileSystemWriter.finish = finish_or_die


if __name__ == "__main__":
    if os.environ.get("FLAME_TEST_DIE_IN_SAVE"):
        die_in_save(int(os.environ["FLAME_TEST_DIE_IN_SAVE"]))
    sys.exit(main(sys.argv[1:], recorded_data))
