"""Local path or hub id? One rule for every name flame may resolve either way (model config, tokenizer, data).

A name *looks local* when it is written like a path: it starts with ``/``, ``./``, ``../`` or ``~``, has
more than one ``/`` (a hub id has at most one: ``org/name``), ends with a file suffix flame reads
(``.json``, ``.jsonl``, ``.parquet``, ...), or has a ``/`` whose parent folder exists here (``data/nope``
next to ``data/``). Such a name that does not exist fails at once, naming it (and close matches in
its folder), instead of being tried on the Hugging Face hub with 25-50 s of retries offline. Only the
other names (``gpt2``, ``fla-hub/transformer-1.3B-100B``) go to the hub, where ``HF_HUB_OFFLINE=1`` is
respected by ``huggingface_hub`` itself (only its local cache is read).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt", ".arrow", ".csv", ".safetensors", ".toml", ".gz", ".zst")


def looks_local(name: str, suffixes: tuple[str, ...] = FILE_SUFFIXES) -> bool:
    """Whether ``name`` is written as a local path (see the module docstring); it need not exist."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name in (".", ".."):
        return True
    if name.count("/") > 1 or name.lower().endswith(tuple(s.lower() for s in suffixes)):
        return True
    return "/" in name and Path(name).expanduser().parent.is_dir()


def missing(name: str) -> str:
    """``"no such file or folder"``, plus the nearest existing folder's close matches when there are any."""
    path = Path(name).expanduser()
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    why = "no such file or folder"
    if parent.is_dir() and parent == path.parent:
        try:
            close = difflib.get_close_matches(path.name, os.listdir(parent), n=3, cutoff=0.6)
        except OSError:
            close = []
        if close:
            why += f" (in {parent}: did you mean {', '.join(close)}?)"
    elif parent.is_dir():
        why += f" ({path.parent} does not exist either)"
    return why


def is_missing_local(name: str, suffixes: tuple[str, ...] = FILE_SUFFIXES) -> bool:
    """A name that looks local and does not exist: fail at once, never ask the hub."""
    return bool(name) and not Path(name).expanduser().exists() and looks_local(name, suffixes)


__all__ = ["FILE_SUFFIXES", "is_missing_local", "looks_local", "missing"]
