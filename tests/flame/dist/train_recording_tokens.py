"""torchrun helper: ``flame.train.main`` on the real data pipeline, recording every token each rank trains on.

Usage: ``python -m torch.distributed.run --nproc_per_node=N tests/flame/dist/train_recording_tokens.py
--job.config_file configs/tiny_cpu.toml [--section.key value ...]``.

Each rank appends one line per batch to ``<dump_folder>/tokens-rank<R>.jsonl``:
``{"launch": pid of the launcher, "input_ids": [[...], ...]}``, so a test can follow every document
across launches (e.g. a resume on another number of ranks). ``state_dict``/``load_state_dict`` pass through.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from flame.train import build_data, load_model_config, main  # noqa: E402


class TokenRecorder:
    def __init__(self, loader, path: str):
        self.loader, self.path, self.launch = loader, path, os.getppid()

    def __iter__(self):
        with open(self.path, "a") as f:
            for batch in self.loader:
                f.write(json.dumps({"launch": self.launch, "input_ids": batch["input_ids"].tolist()}) + "\n")
                f.flush()
                yield batch

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.loader.load_state_dict(state_dict)


def recorded_data(job, dp_rank: int, dp_world: int) -> TokenRecorder:
    vocab = getattr(load_model_config(job), "vocab_size", None)
    os.makedirs(job.job.dump_folder, exist_ok=True)
    path = os.path.join(job.job.dump_folder, f"tokens-rank{os.environ.get('RANK', '0')}.jsonl")
    return TokenRecorder(build_data(job, dp_rank, dp_world, vocab), path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], recorded_data))
