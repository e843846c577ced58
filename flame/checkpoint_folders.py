"""What a checkpoint folder holds on disk: ``step-N`` folders, complete or not, and HF model folders.

Shared by the trainer's checkpointer, the config checks and the converters (no torch / torchtitan
imports here). DCP writes ``.metadata`` last (through a temporary file and a rename, after every rank
wrote its data), so a ``step-N`` folder without it is an interrupted save.
"""

from __future__ import annotations

import os
import re

METADATA = ".metadata"
STEP_DIR = re.compile(r"^step-(\d+)$")


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished DCP checkpoint (its ``.metadata`` exists)."""
    return os.path.isfile(os.path.join(path, METADATA))


def is_hf_folder(path: str | os.PathLike) -> bool:
    """An HF model folder: ``*.safetensors`` weights and no DCP ``.metadata``."""
    return (
        os.path.isdir(path)
        and not is_complete(path)
        and any(name.endswith(".safetensors") for name in os.listdir(path))
    )


def step_folders(folder: str | os.PathLike) -> dict[int, str]:
    """``{N: path}`` for every ``step-N`` folder in ``folder`` (complete or not)."""
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in os.listdir(folder):
        match = STEP_DIR.match(name)
        if match and os.path.isdir(os.path.join(folder, name)):
            out[int(match.group(1))] = os.path.join(folder, name)
    return out
