"""Every Triton kernel casts its float scalar arguments to fp32 on entry (fla/ops/common/README.md, "Kernel
arguments"): torch.compile's inductor launches a user kernel inside a compiled graph with its Python floats typed
fp64, which made fp32 loops fail to compile (parallel_attn, NSA) and fp32 arithmetic run in fp64 elsewhere.

A static check over the kernels' sources, by argument name (the float scalars our kernels take); the compiled
form: ``python scripts/compile_check.py --float-type fp64 <tests>``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import triton

import fla

FLOAT_ARGS = {"scale", "eps", "label_smoothing", "logit_scale", "lse_square_scale"}


def _python_function(obj):
    """The Python function under a kernel's wrappers (lean_launch, autotune, heuristics, jit or, under
    ``TRITON_INTERPRET=1``, the interpreter's), or ``None`` for anything that is not a kernel."""
    for _ in range(8):
        if not isinstance(obj, (triton.runtime.jit.KernelInterface, type(None))) and not hasattr(obj, "kernel"):
            return None
        inner = getattr(obj, "kernel", None) or getattr(obj, "fn", None)
        if inspect.isfunction(inner):
            return inner
        obj = inner
    return None


def _kernels() -> dict[str, object]:
    """``module:name -> Python function`` of every Triton kernel defined in the fla package."""
    found = {}
    for info in pkgutil.walk_packages(fla.__path__, "fla."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            fn = _python_function(obj)
            if fn is not None and fn.__module__ == info.name and fn.__name__.endswith("_kernel"):
                found[f"{info.name}:{name}"] = fn
    return found


def test_kernels_cast_their_float_scalars_to_fp32():
    kernels = _kernels()
    assert len(kernels) > 60, f"found only {len(kernels)} kernels: the scan missed the package"
    missing = []
    for where, fn in kernels.items():
        params = inspect.signature(fn).parameters
        source = inspect.getsource(fn)
        for name in FLOAT_ARGS & set(params):
            if "constexpr" in str(params[name].annotation):
                continue
            if f"{name} = tl.cast({name}, tl.float32)" not in source:
                missing.append(f"{where}({name})")
    assert not missing, f"cast these float arguments to fp32 on entry: {missing}"
