"""Compile one Triton kernel variant for a GPU target without a GPU and print its register use, stack (spills) and
the SASS opcode counts of each loop: what a kernel change does to the instruction mix, measured on a CPU machine.

    python scripts/sass_stats.py fla.ops.mamba.scan:mamba_chunk_bwd_kernel --warps 1 \\
        --const Di=1536 Ds=16 BT=32 BD=32 SOFTPLUS=True HAS_D=True HAS_Z=True HAS_BIAS=True \\
                IS_VARLEN=False --none cu_seqlens chunk_indices \\
        --type T=i32 At=*fp32 h_in=*fp32 dh_in=*fp32 D=*fp32 dt_bias=*fp32 dA_part=*fp32 dB_part=*fp32 \\
               dC_part=*fp32 dD_part=*fp32 dbias_part=*fp32

Pointers default to ``*bf16`` (``--type`` overrides, ``--none`` passes ``None``); ``--const`` values are Python
literals. A loop is a backward branch; its line gives the instructions from the branch target to the branch.
Counts are static (a loop body once), not a profile: the per-iteration mix, not the time.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_LINE = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);")


def _jit_function(obj):
    while not isinstance(obj, triton.runtime.jit.JITFunction):
        obj = getattr(obj, "kernel", None) or obj.fn
    return obj


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def compile_sass(kernel, constants: dict, types: dict, arch: int, warps: int, stages: int) -> tuple[str, str]:
    """``(resource usage line, SASS text)`` of one variant."""
    fn = _jit_function(kernel)
    signature = {n: "constexpr" if n in constants else types.get(n, "*bf16") for n in fn.arg_names}
    constexprs = {(fn.arg_names.index(n),): v for n, v in constants.items() if n in fn.arg_names}
    # pointers 16-byte aligned, as triton specializes them for torch's allocations (vector / async copies)
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if signature[n].startswith("*")}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned)
    out = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as d:
        cubin = os.path.join(d, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(out.asm["cubin"])
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True)
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", cubin], capture_output=True, text=True)
    line = next((x.strip() for x in usage.stdout.splitlines() if "REG:" in x), "?")
    return line, sass.stdout


def loop_histograms(sass: str) -> list[tuple[int, int, collections.Counter]]:
    """``(start, end, opcode counts)`` of each loop (backward branch) in the SASS."""
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in map(_LINE.match, sass.splitlines()) if m]
    loops = []
    for addr, text in ins:
        branch = re.search(r"BRA (0x[0-9a-f]+)", text)
        if branch and int(branch.group(1), 16) < addr:
            start = int(branch.group(1), 16)
            body = [t for a, t in ins if start <= a <= addr]
            ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
            loops.append((start, addr, ops))
    return loops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kernel", help="module:name of a Triton kernel (its launch wrappers are unwrapped)")
    parser.add_argument("--const", nargs="*", default=[], help="NAME=python-literal constexpr values")
    parser.add_argument("--none", nargs="*", default=[], help="arguments passed as None")
    parser.add_argument("--type", nargs="*", default=[], help="NAME=type of non-constexpr arguments (default *bf16)")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--warps", type=int, default=4)
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--top", type=int, default=16, help="opcodes listed per loop")
    args = parser.parse_args()
    module, name = args.kernel.split(":")
    kernel = getattr(importlib.import_module(module), name)
    constants = {k: ast.literal_eval(v) for k, v in _pairs(args.const).items()} | dict.fromkeys(args.none)
    usage, sass = compile_sass(kernel, constants, _pairs(args.type), args.arch, args.warps, args.stages)
    print(usage)
    print(f"instructions: {sum(1 for line in sass.splitlines() if _LINE.match(line))}")
    for start, end, ops in loop_histograms(sass):
        print(f"loop {start:#x}..{end:#x}: {sum(ops.values())} instructions; " +
              ", ".join(f"{op} {n}" for op, n in ops.most_common(args.top)))  # fmt: skip


if __name__ == "__main__":
    main()
