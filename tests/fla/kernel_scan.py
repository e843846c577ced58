"""The Triton kernels of the fla package, for static checks over their sources and decorators."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import triton

import fla


def unwrap(obj) -> tuple[tuple, object] | None:
    """``(wrappers from the outside in, Python function)`` under a kernel's decorators (lean_launch, autotune,
    heuristics, jit or, under ``TRITON_INTERPRET=1``, the interpreter's), or ``None`` for anything that is not a
    kernel."""
    wrappers = []
    for _ in range(8):
        if not isinstance(obj, (triton.runtime.jit.KernelInterface, type(None))) and not hasattr(obj, "kernel"):
            return None
        wrappers.append(obj)
        inner = getattr(obj, "kernel", None) or getattr(obj, "fn", None)
        if inspect.isfunction(inner):
            return tuple(wrappers), inner
        obj = inner
    return None


def fla_kernels() -> dict[str, tuple[tuple, object]]:
    """``module:name -> (wrappers, Python function)`` of every Triton kernel defined in the fla package."""
    found = {}
    for info in pkgutil.walk_packages(fla.__path__, "fla."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            kernel = unwrap(obj)
            if kernel is not None and kernel[1].__module__ == info.name and kernel[1].__name__.endswith("_kernel"):
                found[f"{info.name}:{name}"] = kernel
    return found
