"""What both converters share: dtype names, the model build, and finding DCP step folders.

A flame checkpoint is torchtitan's layout: ``<dump_folder>/<checkpoint.folder>/step-N``,
one DCP folder per saved step. Model tensors sit at the top level under the HF model's
``state_dict()`` names (torchtitan's ModelWrapper flattens them); a full training
checkpoint also holds nested ``optimizer``, ``lr_scheduler``, ``dataloader`` and
``train_state`` entries. DCP writes ``.metadata`` last, so a step folder without it is an
interrupted save and is never chosen.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch

from fla.utils.constants import dtype_from_name
from flame.checkpoint_folders import is_complete, step_folders
from flame.paths import is_missing_local, missing

NON_MODEL_STATES = ("optimizer", "lr_scheduler", "dataloader", "train_state")


class ConvertError(RuntimeError):
    """A conversion that cannot proceed; the message names the path and what is wrong."""


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``fp32`` / ``bf16`` / ``fp16`` (or ``float32`` ...) as a torch dtype; None stays None."""
    if name is None:
        return None
    try:
        return dtype_from_name(name)
    except ValueError as err:
        raise ConvertError(str(err)) from None


def import_fla(custom_module: str = "") -> None:
    """``import fla`` (registers its models with the Auto classes) and an optional extra module."""
    import fla  # noqa: F401

    if custom_module:
        try:
            importlib.import_module(custom_module)
        except ImportError as err:
            raise ConvertError(f"custom module {custom_module!r}: cannot import it ({err})") from None


def load_config(config: str, custom_module: str = ""):
    """The HF config of ``config`` (a .json file, a folder with config.json, or a hub id)."""
    from transformers import AutoConfig

    import_fla(custom_module)
    if is_missing_local(config):
        raise ConvertError(f"model config {config}: {missing(config)}")
    try:
        return AutoConfig.from_pretrained(config)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"model config {config}: cannot load it ({first})") from None


def checkpoint_folder(path: str | os.PathLike, folder: str = "checkpoint") -> Path:
    """The folder that holds the ``step-N`` folders: ``<path>/<folder>`` if it exists, else ``path`` itself."""
    path = Path(path)
    if not path.is_dir():
        raise ConvertError(f"{path}: no such folder (expected a dump folder or its {folder}/ folder)")
    nested = path / folder
    if nested.is_dir():
        return nested
    if step_folders(path):
        return path
    raise ConvertError(f"{path}: holds neither {folder}/ nor step-N folders; is it a flame dump folder?")


def list_steps(folder: Path) -> tuple[list[int], list[int]]:
    """(complete steps, incomplete steps) under ``folder``, each sorted; complete = has DCP ``.metadata``."""
    steps = step_folders(folder)
    complete = sorted(n for n, path in steps.items() if is_complete(path))
    return complete, sorted(set(steps) - set(complete))


def step_folder(path: str | os.PathLike, step: int = -1, folder: str = "checkpoint") -> Path:
    """``.../step-N`` for ``step`` (-1 = the latest complete one) under dump folder ``path``."""
    ckpt = checkpoint_folder(path, folder)
    complete, incomplete = list_steps(ckpt)
    note = f"; incomplete (interrupted saves): {_steps(incomplete)}" if incomplete else ""
    if step == -1:
        if not complete:
            raise ConvertError(f"{ckpt}: no complete checkpoint (no step-N folder with a .metadata file){note}")
        step = complete[-1]
    elif step not in complete:
        why = "is incomplete (no .metadata: the save was interrupted)" if step in incomplete else "does not exist"
        raise ConvertError(f"{ckpt}/step-{step} {why}; complete steps: {_steps(complete) or 'none'}{note}")
    return ckpt / f"step-{step}"


def _steps(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps)


def key_mismatch(what: str, missing: list[str], unexpected: list[str], hint: str, limit: int = 12) -> str:
    """One message listing (the first ``limit``) missing and unexpected keys."""

    def show(keys: list[str]) -> str:
        more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    parts = [what]
    if missing:
        parts.append(f"missing {len(missing)} key(s): {show(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): {show(unexpected)}")
    parts.append(hint)
    return "; ".join(parts)
