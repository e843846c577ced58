"""Run an op under every autotune config of every autotuned kernel it launches, one kernel and config at a time.

The GPU test runs compile one config per autotune key, in turn (``FLA_TEST_ONE_CONFIG=1``), and training runs
whichever config the autotuner picks; a config that only some builds get wrong hides between the two (the WY
backward's 4-warp, 3-stage build gave non-finite, run-dependent gradients on Hopper with triton 3.6 while every
GPU test passed). :func:`sweep_configs` finds the kernels an op call launches through triton's autotuner, then
reruns the call with each of those kernels held to each of its configs alone (the others autotune as usual) and
compares every output with the first run's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from triton.runtime.autotuner import Autotuner
from triton.runtime.errors import OutOfResources

from fla.ops.common.tuning import autotuner_of, only_configs
from fla.utils.launch import lean_launch_disabled


def fla_autotuners() -> list[Autotuner]:
    """Every autotuned kernel of the ``fla`` modules imported so far."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name == "fla" or name.startswith("fla."):
            for value in list(vars(module).values()):
                try:
                    tuner = autotuner_of(value)
                except TypeError:  # not an autotuned kernel
                    continue
                found[id(tuner)] = tuner
    return list(found.values())


def kernel_name(tuner: Autotuner) -> str:
    return getattr(getattr(tuner, "base_fn", None), "__name__", repr(tuner))


def tuners_launched(run: Callable[[], object]) -> list[Autotuner]:
    """The autotuned kernels that ``run()`` launches (through triton's launch path, so each autotuner records
    the config it ran)."""
    run()  # imports and first compiles
    tuners = fla_autotuners()
    for tuner in tuners:
        tuner.best_config = None
    with lean_launch_disabled():
        run()
    return [t for t in tuners if t.best_config is not None]


def sweep_configs(
    run: Callable[[], Sequence[torch.Tensor]],
    check: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> tuple[list[str], list[str]]:
    """``run()`` (returning tensors) under each config of each autotuned kernel it launches, alone; ``check(name,
    reference, output)`` on each output against the first run's. Returns the ``kernel config`` runs made and
    those skipped because the config does not fit the device (``OutOfResources``)."""
    tuners = tuners_launched(run)
    with lean_launch_disabled():
        reference = [t.detach().clone() for t in run()]
    ran, skipped = [], []
    for tuner in tuners:
        for config in list(tuner.configs):
            label = f"{kernel_name(tuner)} [{config}]"
            try:
                with lean_launch_disabled(), only_configs(tuner, [config]):
                    outputs = run()
            except OutOfResources:
                skipped.append(label)
                continue
            for i, (ref, out) in enumerate(zip(reference, outputs, strict=True)):
                check(f"{label} output {i}", ref, out)
            ran.append(label)
    return ran, skipped
