"""Compile, for a GPU target without a GPU, every Triton kernel variant that a set of CPU tests launches.

Under ``TRITON_INTERPRET=1`` the tests run every kernel in the interpreter, which accepts code the GPU compiler
refuses (a module global read in a kernel, an unsupported op, a dtype mix). This script runs the given pytest
arguments in-process under the interpreter while recording each launch's kernel, argument dtypes and constexpr
values, then compiles every distinct variant with Triton's real compiler for the target (default sm_90: frontend,
optimizer, ptxas) in a child process without the interpreter, and prints one line per variant and a summary.
Exit status 1 if any variant fails to compile.

    python scripts/compile_check.py tests/fla/ops/test_rwkv7.py tests/fla/ops/test_nsa.py -k "not gpu"
    python scripts/compile_check.py --arch 80 tests/fla/ops/test_mesa_net.py

``--float-type fp64`` types the Python float arguments (``scale``, ``eps``, ...) as fp64, as torch.compile's
inductor does when it launches a user Triton kernel inside a compiled graph (its ``signature_of`` keeps a Python
float's precision): a kernel whose loop-carried fp32 value mixes with such an argument fails there only.

Compile only: a variant that compiles may still be wrong or slow on the device (shared memory per block is
checked by ptxas only where it is static).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile

_SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64", "int32": "i32",
          "int64": "i64", "int8": "i8", "uint8": "u8", "bool": "i1", "int16": "i16"}  # fmt: skip


def _is_constexpr(annotation) -> bool:
    return "constexpr" in (annotation if isinstance(annotation, str) else getattr(annotation, "__name__", ""))


def _describe(fn, args: tuple, kwargs: dict) -> dict:
    """``{"kernel": module:qualname, "types": {...}, "constants": {...}}`` of one interpreted launch."""
    import torch

    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args)) | kwargs
    types, constants = {}, {}
    for name, value in bound.items():
        if name not in params:
            continue  # launch options (num_warps, ...)
        if _is_constexpr(params[name].annotation) or value is None:
            constants[name] = value if isinstance(value, (int, float, bool, str, type(None))) else str(value)
        elif isinstance(value, torch.Tensor):
            types[name] = "*" + _SHORT[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool):
            types[name] = "i1"
        elif isinstance(value, int):
            types[name] = "i64" if abs(value) >= 2**31 else "i32"
        elif isinstance(value, float):
            types[name] = "fp32"
    return {"kernel": f"{fn.__module__}:{fn.__qualname__}", "types": types, "constants": constants}


def record(pytest_args: list[str]) -> list[dict]:
    """Run pytest under the interpreter and return the distinct kernel launches."""
    os.environ["TRITON_INTERPRET"] = "1"
    import pytest
    from triton.runtime import interpreter

    seen: dict[str, dict] = {}
    original = interpreter.InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        entry = _describe(self.fn, args, kwargs)
        seen.setdefault(json.dumps(entry, sort_keys=True), entry)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = run
    try:
        code = pytest.main(["-q", "-p", "no:randomly", "-o", "addopts=", "-x", *pytest_args])
    finally:
        interpreter.InterpretedFunction.run = original
    if code not in (0, 5):
        raise SystemExit(f"compile_check: the tests failed (pytest exit {code}); fix them first")
    return list(seen.values())


def compile_all(entries: list[dict], arch: int, float_type: str = "fp32", int_type: str = "i32") -> int:
    """Compile each variant for ``sm_<arch>`` (Python float arguments typed ``float_type``, ints that fit 32 bits
    ``int_type``); print one line each; the number that failed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target, failed = GPUTarget("cuda", arch, 32), 0
    for entry in entries:
        module, qualname = entry["kernel"].split(":")
        kernel = getattr(importlib.import_module(module), qualname)
        while not isinstance(kernel, triton.runtime.jit.JITFunction):
            kernel = getattr(kernel, "kernel", None) or kernel.fn
        constants = entry["constants"]
        retype = {"fp32": float_type, "i32": int_type}  # scalars: "fp32" is a Python float, "i32" a Python int
        types = {n: retype.get(t, t) for n, t in entry["types"].items()}
        signature = {n: "constexpr" if n in constants else types.get(n, "*fp32") for n in kernel.arg_names}
        constexprs = {(kernel.arg_names.index(n),): v for n, v in constants.items() if n in kernel.arg_names}
        label = f"{qualname} {json.dumps(constants, sort_keys=True)[:160]}"
        try:
            out = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=target,
                                 options={"num_warps": 4, "num_stages": 2})  # fmt: skip
            print(f"ok    {label}  ptx={len(out.asm['ptx'])}")
        except Exception as e:  # noqa: BLE001 - reported per variant
            failed += 1
            print(f"FAIL  {label}\n      {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 80 (A100)")
    parser.add_argument(
        "--float-type",
        choices=("fp32", "fp64"),
        default="fp32",
        help="type of Python float arguments: fp32 (a plain launch) or fp64 (inside torch.compile)",
    )
    parser.add_argument(
        "--int-type",
        choices=("i32", "i64"),
        default="i32",
        help="type of Python int arguments that fit 32 bits: i32 (a plain launch) or i64 (inductor with int64 sizes)",
    )
    parser.add_argument("--compile-from", default=None, help=argparse.SUPPRESS)  # the child's input file
    args, pytest_args = parser.parse_known_args()
    if args.compile_from:
        with open(args.compile_from) as f:
            failed = compile_all(json.load(f), args.arch, args.float_type, args.int_type)
        print(f"compile_check: {failed} failed")
        raise SystemExit(1 if failed else 0)
    entries = record(pytest_args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(entries, f)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    child = [sys.executable, os.path.abspath(__file__), "--arch", str(args.arch), "--float-type", args.float_type,
             "--int-type", args.int_type, "--compile-from", f.name]  # fmt: skip
    raise SystemExit(subprocess.run(child, env=env).returncode)


if __name__ == "__main__":
    main()
