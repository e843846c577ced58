"""The one place that makes CPU (gloo) a supported device for flame and torchtitan 0.2.2.

Everything device-specific the trainer needs goes through this module; nothing else in
``flame`` asks ``torch.cuda`` directly. Facts handled here (all seen with torchtitan 0.2.2):

* torchtitan picks its device type at import time and falls back to ``"cuda"`` when no
  accelerator is found; :func:`patch_torchtitan` (called when the trainer starts, never on
  import) rebinds ``device_type`` / ``device_module`` in the torchtitan modules that copied
  them, so meshes and process groups use ``cpu``/gloo.
* torchtitan's memory monitor calls ``torch.cpu`` functions that do not exist: flame reads
  memory through :func:`memory_stats` instead (peak RSS on CPU).
* ``set_pg_timeouts`` calls ``barrier(device_ids=...)``, which gloo rejects: use
  :func:`set_pg_timeouts` / :func:`barrier` from here.
* FSDP2's default gradient division uses ``ReduceOp.PREMUL_SUM``, which gloo lacks; and
  the trainer already divides the summed loss by the global token count, so FSDP's own
  division must be off (factor 1.0) or grad norms shrink with the number of ranks:
  :func:`fsdp_reduce_as_sum` does both.
* Mixed precision: bf16 parameters on GPU, fp32 on CPU (:func:`param_dtype`).
* torchtitan's profiler context passes ``None`` as the accelerator activity when there is
  none, which ``torch.profiler`` rejects: :func:`maybe_enable_profiling` profiles the CPU.
* Known noise that is not the user's problem is silenced when the trainer starts
  (:func:`quiet_known_warnings`): torchtitan's "TORCH_NCCL_ASYNC_ERROR_HANDLING will be
  overridden" on a CPU (gloo) run, where torchrun set that NCCL variable, and torchdata's
  "'set_vital' is deprecated" from every ``StatefulDataLoader``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import warnings
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType

import torch
import torch.distributed as dist
from torch import nn

DEVICE_TYPE: str = "cuda" if torch.cuda.is_available() else "cpu"
"""``"cuda"`` when a CUDA device is visible, else ``"cpu"``."""

from fla.utils.constants import DTYPES as _DTYPES  # noqa: E402 - the one dtype-name map


def device_module() -> ModuleType:
    """``torch.cuda`` or ``torch.cpu``: the module torchtitan should call for the device."""
    return getattr(torch, DEVICE_TYPE)


def patch_torchtitan() -> None:
    """Point torchtitan's import-time device globals at :data:`DEVICE_TYPE` (idempotent; the trainer
    calls it when it starts, see :func:`flame.titan_internals.apply_patches`); on CPU also silence
    DTensor's warning that CPU support is incomplete (flame draws initial weights from plain tensors,
    never from DTensor's RNG)."""
    from flame.titan_internals import apply_patches

    apply_patches(DEVICE_TYPE, device_module())
    if DEVICE_TYPE == "cpu":
        warnings.filterwarnings("ignore", message=r"DTensor .* may not have complete support on cpu")
    quiet_known_warnings()


NCCL_ASYNC_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"


def quiet_known_warnings() -> None:
    """Silence warnings every run would print that are not the user's to act on (idempotent).

    * On CPU there is no NCCL: the ``TORCH_NCCL_ASYNC_ERROR_HANDLING`` that torchrun exports is
      dropped, so torchtitan's ``init_distributed`` sets its own value without warning that it
      overrides it (on GPU the variable, and torchtitan's warning, stay).
    * torchdata 0.11's ``StatefulDataLoader`` calls the deprecated ``torch.set_vital`` on creation.
    """
    if DEVICE_TYPE == "cpu":
        os.environ.pop(NCCL_ASYNC_ERROR_HANDLING, None)
    warnings.filterwarnings("ignore", message=r"'set_vital' is deprecated", category=UserWarning)


def local_device() -> torch.device:
    """This process's device (``cuda:LOCAL_RANK`` or ``cpu``); sets the current CUDA device."""
    if DEVICE_TYPE == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def param_dtype(name: str) -> torch.dtype:
    """Compute dtype of parameters under mixed precision: ``name`` on GPU, float32 on CPU."""
    return _DTYPES[name] if DEVICE_TYPE == "cuda" else torch.float32


def reduce_dtype(name: str) -> torch.dtype:
    """Gradient reduction dtype (``mixed_precision_reduce``)."""
    return _DTYPES[name]


def synchronize() -> None:
    """Wait for queued device work (no-op on CPU)."""
    if DEVICE_TYPE == "cuda":
        torch.cuda.synchronize()


def barrier() -> None:
    """A world barrier that works on NCCL (with the device id) and gloo (without)."""
    if not dist.is_initialized():
        return
    if DEVICE_TYPE == "cuda":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def set_pg_timeouts(timeout: timedelta, parallel_dims) -> None:
    """torchtitan's ``set_pg_timeouts`` (barrier, then new timeout on every mesh group) for any device."""
    barrier()
    synchronize()
    groups = [mesh.get_group() for mesh in parallel_dims.get_all_one_dimensional_meshes().values()] + [None]
    for group in groups:
        if dist.get_backend(group) in ("gloo", "nccl"):  # torchtitan's size-1 dims use the "fake" backend
            dist.distributed_c10d._set_pg_timeout(timeout, group)


def fsdp_reduce_as_sum(model: nn.Module) -> None:
    """Make every FSDP module of ``model`` reduce gradients as a plain sum.

    The trainer scales each micro-batch loss by ``local_tokens / global_tokens``, so the
    summed gradient already is the global mean: FSDP's division by the data-parallel size
    is disabled (factor 1.0). Without a CUDA device (gloo has no ``PREMUL_SUM``) the
    collectives are also forced to ``SUM``, which gives the same numbers.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            if DEVICE_TYPE != "cuda":
                module.set_force_sum_reduction_for_comms(True)


@dataclass
class MemStats:
    """Peak memory since the last reset, in GiB; ``capacity_gib`` is the device total."""

    peak_active_gib: float
    peak_reserved_gib: float
    capacity_gib: float
    num_alloc_retries: int = 0


_GIB = 1024**3


def memory_stats() -> MemStats:
    """Peak device memory (CUDA allocator stats), or the process peak RSS on CPU."""
    if DEVICE_TYPE == "cuda":
        stats = torch.cuda.memory_stats()
        capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        return MemStats(
            stats.get("active_bytes.all.peak", 0) / _GIB,
            stats.get("reserved_bytes.all.peak", 0) / _GIB,
            capacity / _GIB,
            stats.get("num_alloc_retries", 0),
        )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return MemStats(peak_kib / 1024**2, peak_kib / 1024**2, capacity / _GIB)


def reset_peak_memory() -> None:
    """Start a new peak-memory window (CUDA only; the CPU peak RSS cannot be reset)."""
    if DEVICE_TYPE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def device_name() -> str:
    """Human-readable device name, e.g. ``NVIDIA H200`` or ``cpu``."""
    return torch.cuda.get_device_name() if DEVICE_TYPE == "cuda" else "cpu"


@contextlib.contextmanager
def maybe_enable_profiling(config, *, global_step: int = 0, base_folder: str = ""):
    """torchtitan's ``maybe_enable_profiling`` (``[profiling]`` section), CPU-only runs included.

    Yields the ``torch.profiler.profile`` (call ``.step()`` every step) or ``None`` when off.
    """
    from torchtitan.tools import profiling

    if DEVICE_TYPE == "cuda" or not config.enable_profiling:
        with profiling.maybe_enable_profiling(config, global_step=global_step, base_folder=base_folder) as prof:
            yield prof
        return
    trace_dir = os.path.join(base_folder, config.save_traces_folder)
    rank = dist.get_rank() if dist.is_initialized() else 0

    def dump(prof) -> None:
        folder = os.path.join(trace_dir, f"iteration_{prof.step_num}")
        os.makedirs(folder, exist_ok=True)
        prof.export_chrome_trace(os.path.join(folder, f"rank{rank}_trace.json"))

    wait = config.profile_freq - (config.profiler_active + config.profiler_warmup)
    schedule = torch.profiler.schedule(wait=wait, warmup=config.profiler_warmup, active=config.profiler_active)
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=dump) as prof:
        prof.step_num = global_step
        yield prof


def peak_flops() -> float | None:
    """Dense bf16 peak FLOP/s of this device for MFU (torchtitan's table); ``None`` on CPU."""
    if DEVICE_TYPE != "cuda":
        return None
    from torchtitan.tools.utils import get_peak_flops

    return get_peak_flops(device_name())
