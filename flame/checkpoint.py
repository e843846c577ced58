"""DCP checkpoints and auto-resume: torchtitan 0.2.2's ``CheckpointManager`` with safer step discovery.

On-disk layout (torchtitan's, unchanged): ``<job.dump_folder>/<checkpoint.folder>/step-N/`` is
one DCP folder. A *full* checkpoint holds the model's state dict at the top level under the
HF model's own names (``model.embeddings.weight``, ``lm_head.weight``, ...) next to
``optimizer``, ``lr_scheduler``, ``dataloader`` (one ``dp_rank_<r>`` entry per data-parallel
rank; every rank loads all of them, so a run may resume on another number of ranks) and
``train_state`` (step, tokens seen, skipped steps, one RNG entry per rank). A
*model-only* checkpoint holds just the model keys: the final save with
``checkpoint.last_save_model_only`` (cast to ``export_dtype``), or a ``step-0`` seed such as
``python -m flame.convert.hf_to_dcp`` writes.

What flame adds to torchtitan's manager (subclassed, not copied; the torchtitan internals it
reaches are in :mod:`flame.titan_internals`):

* A step folder counts only once DCP's ``.metadata`` exists: DCP writes it last, through a
  temporary file and a rename, after every rank wrote its data. Folders without it are
  interrupted saves; they are named in a warning and skipped.
* Auto-resume (``load_step = -1``) tries the complete checkpoints newest first; one that
  fails to load is reported and the next older one is tried. Before loading, every data file
  the ``.metadata`` names is checked to exist and to be long enough (:func:`damage`), so a
  deleted or truncated ``*.distcp`` is named in the warning; other damage surfaces as DCP's
  ``CheckpointException`` (a ``BaseException``), which is caught too. All ranks agree on each
  verdict (a checkpoint one rank cannot read is skipped by every rank), so they load the same
  step. Model-only checkpoints past step 0 carry no optimizer state and are not resumed from.
* ``load_step`` naming a missing step fails with one line listing the steps there are.
* ``initial_load_path`` is used whenever the run's folder holds no complete checkpoint
  (torchtitan only when the folder does not exist, so an interrupted first save hid it). It may
  be a DCP step folder or an HF model folder (``*.safetensors``, loaded into the sharded model by
  :func:`flame.convert.load_hf_into`, model weights only).
* Before step N is saved again, a stale ``.metadata`` in ``step-N`` is removed, so a
  re-save that gets killed cannot pass for complete.
* ``keep_latest_k`` also holds after the final save; ``close`` waits for a pending async save.
"""

from __future__ import annotations

import os
import pickle
import random
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.stateful import Stateful
from torchtitan.components.checkpoint import DATALOADER, LR_SCHEDULER, MODEL, TRAIN_STATE
from torchtitan.tools.logging import logger

from flame.checkpoint_folders import METADATA, is_complete, is_hf_folder, step_folders
from flame.config import ConfigError
from flame.process_tree import stop_inside
from flame.titan_internals import CheckpointManagerBase

STATE_KEYS = ("model", "optimizer", "lr_scheduler", "dataloader", "train_state")
"""Top-level groups of a full checkpoint (``checkpoint.exclude_from_loading`` names some of them)."""


def is_model_only(path: str) -> bool:
    """Whether the complete checkpoint at ``path`` holds only model weights (no train state)."""
    keys = FileSystemReader(path).read_metadata().state_dict_metadata
    return not any(k == TRAIN_STATE or k.startswith(TRAIN_STATE + ".") for k in keys)


def damage(path: str) -> str | None:
    """Why the complete-looking checkpoint ``path`` cannot be loaded, or None when its files look whole.

    Reads the ``.metadata`` and checks that every data file it names exists and is at least as long
    as the byte ranges it lists (a deleted or truncated ``*.distcp``). Cheap: no tensor is read.
    """
    try:
        storage = FileSystemReader(path).read_metadata().storage_data or {}
    except Exception as err:  # noqa: BLE001 - any unreadable .metadata is damage
        return f"its {METADATA} cannot be read: {_first_line(err)}"
    need: dict[str, int] = {}
    for info in storage.values():
        name = getattr(info, "relative_path", None)
        if name is not None:
            need[name] = max(need.get(name, 0), int(info.offset) + int(info.length))
    for name, size in sorted(need.items()):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{file} is missing"
        have = os.path.getsize(file)
        if have < size:
            return f"{file} is truncated ({have} bytes, the {METADATA} needs {size})"
    return None


def _first_line(err: BaseException) -> str:
    """The first line of ``err``'s message; for DCP's CheckpointException, the first rank's underlying error."""
    if isinstance(err, CheckpointException) and err.failures:
        rank, (inner, _trace) = next(iter(sorted(err.failures.items())))
        return f"rank {rank}: {_first_line(inner)}"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(text) > 160:
        text = text[:157].rstrip() + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def all_ranks_agree(ok: bool) -> bool:
    """True only when ``ok`` is True on every rank (a collective: every rank must call it)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return ok
    votes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(votes, bool(ok))
    return all(votes)


def rng_state() -> bytes:
    """This process's RNG states (torch CPU, the accelerator's, python ``random``) as one blob."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return pickle.dumps(state)


def set_rng_state(blob: bytes) -> None:
    """Restore what :func:`rng_state` captured."""
    state = pickle.loads(blob)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class FlameCheckpointManager(CheckpointManagerBase):
    """torchtitan's ``CheckpointManager`` with complete-only discovery and auto-resume fallbacks.

    ``load(step)`` and ``save(step, last_step)`` keep torchtitan's meaning; see the module
    docstring for the differences.
    """

    # ------------------------------------------------------------------ discovery

    def complete_steps(self, warn: bool = True) -> list[int]:
        """Steps with a complete checkpoint, newest first; incomplete folders are warned about."""
        steps = []
        for step, path in step_folders(self.folder).items():
            if is_complete(path):
                steps.append(step)
            elif warn:
                logger.warning(
                    f"Checkpoint {path} is incomplete (no {METADATA}: its save was interrupted); skipping it"
                )
        return sorted(steps, reverse=True)

    def find_load_step(self, folder: str = "") -> int:
        if folder and folder != self.folder:
            return super().find_load_step(folder)
        steps = self.complete_steps(warn=False)
        return steps[0] if steps else -1

    def finished_step(self, total_steps: int) -> int | None:
        """The step of a model-only final checkpoint at or past ``total_steps`` (training is done), else None."""
        if not self.enable:
            return None
        for step in self.complete_steps(warn=False):
            if step < total_steps or step == 0:
                break
            try:
                if is_model_only(self.checkpoint_path(step)):
                    return step
            except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported by load()
                continue
        return None

    # ------------------------------------------------------------------ load

    @torch.no_grad()
    def load(self, step: int = -1) -> bool:
        """Load checkpoint ``step`` (-1: the newest complete one, else ``initial_load_path``); True if loaded."""
        if not self.enable:
            return False
        if step != -1:
            return self._load_explicit(step)
        failed = []
        # Every rank walks the same list and votes on each step, so all of them load the same one.
        for candidate in self.complete_steps():
            path = self.checkpoint_path(candidate)
            why = damage(path)
            model_only = False
            if why is None and candidate > 0:
                try:
                    model_only = is_model_only(path)
                except Exception as err:  # noqa: BLE001 - reported as damage below
                    why = f"its {METADATA} cannot be read: {_first_line(err)}"
            if not all_ranks_agree(why is None):
                failed.append(path)
                why = why or "another rank cannot read it (see that rank's log)"
                logger.warning(f"Checkpoint {path} could not be loaded ({why}); trying an older one")
                continue
            if not all_ranks_agree(not model_only):
                logger.warning(f"Checkpoint {path} holds only model weights (a final export); not resuming from it")
                continue
            try:
                self._load_from(path, model_only=candidate == 0)
                loaded = True
            except (Exception, CheckpointException) as err:  # noqa: BLE001 - older checkpoints remain
                if stop_inside(err) is not None:
                    raise  # a signal during the load, not damage
                loaded, why = False, _first_line(err)
            if all_ranks_agree(loaded):
                return True
            failed.append(path)
            why = why if not loaded else "another rank could not load it (see that rank's log)"
            logger.warning(f"Checkpoint {path} could not be loaded ({why}); trying an older one")
        if failed:
            raise ConfigError(
                "checkpoint.folder",
                self.folder,
                f"no checkpoint in it could be loaded (tried {', '.join(failed)}; see the warnings above): "
                f"move them away to start over, or set checkpoint.load_step",
            )
        if self.initial_load_path:
            return self._load_initial()
        return False

    def _load_explicit(self, step: int) -> bool:
        path = self.checkpoint_path(step)
        if not is_complete(path):
            have = sorted(self.complete_steps(warn=False))
            why = "an interrupted save (no .metadata)" if os.path.isdir(path) else "not found"
            listed = ", ".join(map(str, have)) if have else "none"
            raise ConfigError(
                "checkpoint.load_step", step, f"{path} is {why}; complete steps in {self.folder}: {listed}"
            )
        model_only = step == 0 or is_model_only(path)
        if model_only and step > 0:
            logger.warning(f"Checkpoint {path} holds only model weights: optimizer, data and train state start fresh")
        self._load_from(path, model_only=model_only)
        return True

    def _load_initial(self) -> bool:
        path = self.initial_load_path
        if is_hf_folder(path):  # continued pretraining straight from an HF release: weights only
            from flame.convert import load_hf_into

            logger.info(f"Loading the HF model weights of {path} (model only)")
            for part in self.model_parts():
                load_hf_into(part, path)
            self.refresh_model_state()
            return True
        if not is_complete(path):
            raise ConfigError("checkpoint.initial_load_path", path, f"not a complete DCP checkpoint (no {METADATA})")
        self._load_from(path, model_only=self.initial_load_model_only)
        return True

    def _load_from(self, path: str, model_only: bool) -> None:
        what = "model weights" if model_only else "full state"
        logger.info(f"Loading the checkpoint {path} ({what})")
        states = self.states_to_load(model_only)  # a copy: the model wrapper's cached dict must survive a failure
        if TRAIN_STATE in states or DATALOADER in states or LR_SCHEDULER in states:
            saved = set(FileSystemReader(path).read_metadata().state_dict_metadata)
        if TRAIN_STATE in states:
            states[TRAIN_STATE] = _SavedKeysOnly(states[TRAIN_STATE], TRAIN_STATE, saved)
        if DATALOADER in states:
            states[DATALOADER] = _EveryLoaderRank(states[DATALOADER], saved)
        if LR_SCHEDULER in states and not any(k.startswith(f"{LR_SCHEDULER}.flame_schedule.") for k in saved):
            states[LR_SCHEDULER] = _Without(states[LR_SCHEDULER], "flame_schedule")  # saved before flame.schedule
        self.load_states(states, path)

    # ------------------------------------------------------------------ save

    @torch.no_grad()
    def save(self, curr_step: int, last_step: bool = False) -> None:
        if self.should_save(curr_step, last_step) and (not dist.is_initialized() or dist.get_rank() == 0):
            stale = os.path.join(self.checkpoint_path(curr_step), METADATA)
            if os.path.exists(stale):
                os.remove(stale)  # a re-save of this step must not look complete before it is
        super().save(curr_step, last_step)

    def after_last_save(self, step: int) -> None:
        self.purge_stale_checkpoints()

    def close(self) -> None:
        """Wait for a pending async save, then stop torchtitan's purge thread."""
        try:
            self.wait_for_async_save()
        except Exception as err:  # noqa: BLE001 - closing must not hide the error that ended the run
            logger.error(f"The last async checkpoint save failed: {err}")
        super().close()


class _SavedKeysOnly(Stateful):
    """``inner``'s state without the entries ``saved`` lacks (per-rank RNG of ranks the saving run did not have)."""

    def __init__(self, inner: Stateful, prefix: str, saved: set[str]):
        self.inner, self.prefix, self.saved = inner, prefix, saved

    def state_dict(self) -> dict[str, Any]:
        def keep(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
            out = {}
            for key, value in tree.items():
                name = f"{prefix}.{key}"
                if isinstance(value, dict):
                    out[key] = keep(value, name)
                elif name in self.saved:
                    out[key] = value
                else:
                    logger.warning(f"{name} is not in the checkpoint (saved by another number of ranks?); not restored")
            return out

        return keep(self.inner.state_dict(), self.prefix)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


class _Without(Stateful):
    """``inner``'s state without its entry ``key`` (which an older checkpoint does not have)."""

    def __init__(self, inner: Stateful, key: str):
        self.inner, self.key = inner, key

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner.state_dict().items() if k != self.key}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


class _EveryLoaderRank(Stateful):
    """The data loader's state with every saved ``dataloader.*`` entry (all data-parallel ranks'), so that a run
    on another number of ranks gets the whole stream's position (``FlameDataLoader.load_state_dict``)."""

    def __init__(self, inner: Stateful, saved: set[str]):
        self.inner, self.saved = inner, saved

    def state_dict(self) -> dict[str, Any]:
        own = self.inner.state_dict()
        keys = [k[len(DATALOADER) + 1 :] for k in self.saved if k.startswith(DATALOADER + ".")]
        if not keys:
            return own  # nothing saved: DCP names the missing key
        return {k: own.get(k, b"") for k in keys}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


def build_checkpointer(
    job,
    model: nn.Module,
    optimizers,
    lr_schedulers,
    dataloader: Any,
    train_state: Stateful,
) -> FlameCheckpointManager:
    """The run's checkpoint manager (a no-op when ``checkpoint.enable`` is false).

    ``dataloader`` is saved per data-parallel rank when it is ``Stateful``; a loader without
    ``state_dict`` is left out with a warning (a resumed run then restarts its data).
    """
    stateful_loader = isinstance(dataloader, Stateful)
    manager = FlameCheckpointManager(
        dataloader=dataloader if stateful_loader else None,
        model_parts=[model],
        optimizers=optimizers,
        lr_schedulers=lr_schedulers,
        states={TRAIN_STATE: train_state},
        checkpoint_config=job.checkpoint,
        sd_adapter=None,
        base_folder=job.job.dump_folder,
    )
    if not stateful_loader:
        manager.states.pop(DATALOADER, None)
        if job.checkpoint.enable:
            logger.warning("The data loader has no state_dict: checkpoints leave it out, a resumed run restarts it")
    assert MODEL in manager.states
    return manager
