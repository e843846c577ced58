"""An autotuned kernel that accumulates into an output with atomics names that output in ``reset_to_zero``.

The autotuner times each config by launching the kernel several times on the same buffers: without a reset the
atomic sums pile up over those launches. On an H100 PaTH's dw came out ~10x too large this way (its dq kernel adds
each chunk's Phi with ``tl.atomic_add``); under the interpreter the autotuners keep one config and never time, so
the CPU tests could not see it. A static check over the kernels' sources.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import triton
from triton.runtime.autotuner import Autotuner

import fla


def _autotuned_kernels() -> dict[str, tuple[Autotuner, object]]:
    """``module:name -> (autotuner, Python function)`` of every autotuned Triton kernel of the fla package."""
    found = {}
    for info in pkgutil.walk_packages(fla.__path__, "fla."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            node, tuner = getattr(obj, "kernel", obj), None
            for _ in range(8):
                if isinstance(node, Autotuner):
                    tuner = node
                if not isinstance(node, triton.runtime.jit.KernelInterface) and not hasattr(node, "fn"):
                    break
                inner = getattr(node, "fn", None)
                if inspect.isfunction(inner):
                    if tuner is not None and inner.__module__ == info.name:
                        found[f"{info.name}:{name}"] = (tuner, inner)
                    break
                node = inner
    return found


def test_atomic_outputs_are_reset_between_autotune_timings():
    kernels = _autotuned_kernels()
    assert len(kernels) > 30, f"found only {len(kernels)} autotuned kernels: the scan missed the package"
    atomic = {where: tuner for where, (tuner, fn) in kernels.items() if "tl.atomic_" in inspect.getsource(fn)}
    assert atomic, "no autotuned kernel with atomics found: the scan is broken (PaTH's dq kernel has one)"
    missing = [where for where, tuner in atomic.items() if not tuner.reset_to_zero]
    assert not missing, f"these autotuned kernels accumulate with atomics but reset nothing: {missing}"
