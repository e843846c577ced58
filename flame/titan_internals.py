"""Every use flame makes of torchtitan's private API (pinned: 0.2.2), and the patches it applies to torchtitan.

flame builds on torchtitan's public components, but a few things it needs are only reachable
through private members. They are all here, behind public names, so that a torchtitan upgrade
that drops or changes one fails in this module, with a message naming the member and what flame
uses it for (:class:`TorchtitanAPIError`); tests/flame/test_titan_internals.py checks each
behaviour flame relies on. Nothing is patched when ``flame`` is imported: the trainer calls
:func:`apply_patches` when it starts.

What flame relies on:

* ``CheckpointManager`` (:class:`CheckpointManagerBase`): the step folder path
  (``_create_checkpoint_id``), the saving policy (``_should_save``), the states a model-only load
  restores (``_states_to_load``), the final save (``_save_last_step``), ``keep_latest_k``
  (``_purge_stale_checkpoints``), waiting for an async save (``_async_wait``), the step discovery
  hook its ``load`` calls (``_find_load_step``), and the model wrapper's cached state dict
  (``ModelWrapper._get_state_dict`` / ``cache_state_dict``).
* Activation checkpointing of one block: ``_apply_full_ac``, ``_apply_op_sac`` with llama3's
  ``_op_sac_save_list`` (:func:`apply_full_ac`, :func:`apply_op_sac`).
* ``ParallelDims._global_meshes["dense"]``: the mesh that keeps size-1 dims (:func:`dense_mesh`).
* The device torchtitan picked at import time (``device_type`` / ``device_module`` copied into
  several modules; "cuda" when there is no accelerator): :func:`apply_patches` rebinds them.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version
from typing import Any

from torch import nn
from torchtitan.components.checkpoint import MODEL, AsyncMode, CheckpointManager, ModelWrapper

TESTED_VERSION = "0.2.2"


class TorchtitanAPIError(RuntimeError):
    """A torchtitan private member flame relies on is gone or changed."""


def _gone(owner: str, name: str, why: str) -> TorchtitanAPIError:
    return TorchtitanAPIError(
        f"torchtitan {version('torchtitan')} (flame is tested with {TESTED_VERSION}): {owner}.{name} is gone or "
        f"changed; flame uses it for {why} (update flame/titan_internals.py)"
    )


# (module, attribute path inside it, what flame uses it for): checked by check_private_api().
PRIVATE_API: tuple[tuple[str, str, str], ...] = (
    ("torchtitan.components.checkpoint", "CheckpointManager._create_checkpoint_id", "the folder of a step"),
    ("torchtitan.components.checkpoint", "CheckpointManager._should_save", "whether a step is saved"),
    ("torchtitan.components.checkpoint", "CheckpointManager._states_to_load", "the states a (model-only) load reads"),
    ("torchtitan.components.checkpoint", "CheckpointManager._save_last_step", "the final save"),
    ("torchtitan.components.checkpoint", "CheckpointManager._purge_stale_checkpoints", "keep_latest_k"),
    ("torchtitan.components.checkpoint", "CheckpointManager._async_wait", "waiting for an async save"),
    ("torchtitan.components.checkpoint", "CheckpointManager._find_load_step", "the step its load() resumes from"),
    ("torchtitan.components.checkpoint", "ModelWrapper._get_state_dict", "refreshing the cached model state dict"),
    ("torchtitan.distributed.activation_checkpoint", "_apply_full_ac", "activation checkpointing of a block"),
    ("torchtitan.distributed.activation_checkpoint", "_apply_op_sac", "per-op selective activation checkpointing"),
    ("torchtitan.models.llama3.infra.parallelize", "_op_sac_save_list", "the ops per-op SAC keeps"),
)

# torchtitan modules that copy `device_type` / `device_module` from torchtitan.tools.utils at import.
DEVICE_MODULES = (
    "torchtitan.tools.utils",
    "torchtitan.distributed.parallel_dims",
    "torchtitan.distributed.utils",
    "torchtitan.tools.profiling",
    "torchtitan.components.metrics",
)


def _resolve(module: str, path: str, why: str) -> Any:
    try:
        obj = importlib.import_module(module)
        for part in path.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise _gone(module, path, why) from None
    return obj


def check_private_api() -> None:
    """Raise :class:`TorchtitanAPIError` naming every member of :data:`PRIVATE_API` that is gone."""
    missing = []
    for module, path, why in PRIVATE_API:
        try:
            _resolve(module, path, why)
        except TorchtitanAPIError as err:
            missing.append(str(err))
    if missing:
        raise TorchtitanAPIError("; ".join(missing))


def apply_patches(device_type: str, device_module: Any) -> None:
    """Point torchtitan's import-time device globals at ``device_type`` / ``device_module`` (idempotent).

    Imports the torchtitan modules flame uses, then rebinds ``device_type`` and ``device_module``
    wherever :data:`DEVICE_MODULES` copied them (modules imported later are patched on the next call).
    """
    import torchtitan.distributed.parallel_dims  # noqa: F401
    import torchtitan.distributed.utils  # noqa: F401
    import torchtitan.tools.utils  # noqa: F401

    for name in DEVICE_MODULES:
        mod = sys.modules.get(name)
        if mod is None:
            continue
        if hasattr(mod, "device_type"):
            mod.device_type = device_type
        if hasattr(mod, "device_module"):
            mod.device_module = device_module


# ----------------------------------------------------------------------------- activation checkpointing


def apply_full_ac(block: nn.Module, ac_config) -> nn.Module:
    """``block`` wrapped so that its activations are recomputed in backward (torchtitan's full AC)."""
    fn = _resolve("torchtitan.distributed.activation_checkpoint", "_apply_full_ac", "activation checkpointing")
    return fn(block, ac_config)


def apply_op_sac(block: nn.Module, ac_config) -> nn.Module:
    """``block`` wrapped in torchtitan's per-op selective AC (matmuls and attention saved, the rest recomputed)."""
    fn = _resolve("torchtitan.distributed.activation_checkpoint", "_apply_op_sac", "per-op selective AC")
    save = _resolve("torchtitan.models.llama3.infra.parallelize", "_op_sac_save_list", "the ops per-op SAC keeps")
    return fn(block, ac_config, base_fqn=None, op_sac_save_list=save)


# ----------------------------------------------------------------------------- meshes


def dense_mesh(parallel_dims):
    """torchtitan's ("pp", "dp_replicate", "fsdp", "tp") mesh with every dim, size-1 ones included.

    ``ParallelDims.get_mesh`` hides size-1 dims; HSDP over (R x 1) and FSDP's wrapper under
    tensor parallel only still need them. The meshes must be built (``parallel_dims.world_mesh``).
    """
    try:
        return parallel_dims._global_meshes["dense"]
    except (AttributeError, KeyError, TypeError):
        raise _gone(
            "torchtitan.distributed.parallel_dims", 'ParallelDims._global_meshes["dense"]', "FSDP's mesh"
        ) from None


# ----------------------------------------------------------------------------- checkpoints


class CheckpointManagerBase(CheckpointManager):
    """torchtitan's ``CheckpointManager`` with the private members flame uses behind public names.

    Hooks a subclass overrides: :meth:`find_load_step` (what torchtitan's ``load`` resumes from)
    and :meth:`after_last_save` (runs after the final save).
    """

    def checkpoint_path(self, step: int) -> str:
        """The DCP folder of ``step`` (``<folder>/step-N``)."""
        return self._create_checkpoint_id(step)

    def should_save(self, step: int, last_step: bool = False) -> bool:
        """Whether ``save(step, last_step)`` writes a checkpoint (enabled, interval, last step, first step)."""
        return self._should_save(step, last_step)

    def states_to_load(self, model_only: bool) -> dict[str, Any]:
        """The states a load restores: the model only, or everything not excluded from loading."""
        return dict(self._states_to_load(model_only))

    def load_states(self, states: dict[str, Any], path: str) -> None:
        """Load ``states`` in place from the DCP folder ``path``."""
        self.dcp_load(states, checkpoint_id=path, from_hf=False, from_quantized=False)

    def purge_stale_checkpoints(self) -> None:
        """Delete the oldest step folders beyond ``keep_latest_k`` (rank 0; torchtitan's purge thread)."""
        self._purge_stale_checkpoints()

    def wait_for_async_save(self) -> None:
        """Block until a pending async save is written (no-op when none is pending)."""
        if getattr(self, "save_future", None) is not None and self.async_mode != AsyncMode.DISABLED:
            self._async_wait()

    def model_parts(self) -> list[nn.Module]:
        """The model modules the checkpoint holds."""
        return self.states[MODEL].model

    def refresh_model_state(self) -> None:
        """Re-read the model's state dict after its weights were replaced outside DCP (saves use the cache)."""
        wrapper: ModelWrapper = self.states[MODEL]
        wrapper.cache_state_dict = wrapper._get_state_dict()

    # torchtitan's private hooks, routed to the public ones above

    def find_load_step(self, folder: str = "") -> int:
        """The step torchtitan's ``load(-1)`` resumes from in ``folder`` (default: the run's), -1 if none."""
        return CheckpointManager._find_load_step(self, folder)

    def _find_load_step(self, folder: str = "") -> int:
        return self.find_load_step(folder)

    def after_last_save(self, step: int) -> None:
        """Runs after the final save of ``step`` (``save(step, last_step=True)``)."""

    def _save_last_step(self, curr_step: int) -> None:
        super()._save_last_step(curr_step)
        self.after_last_save(curr_step)
