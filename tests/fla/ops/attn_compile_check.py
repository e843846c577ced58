"""Compile every softmax-attention kernel for sm_90 without a GPU (Triton's frontend, optimizer and ptxas).

Run in a process without ``TRITON_INTERPRET`` (the interpreter accepts code the compiler refuses, e.g. a plain
module global read in a kernel): ``python -m tests.fla.ops.attn_compile_check`` prints one line per kernel variant:
every flag combination at the first autotune candidate, and every candidate (and fallback) tile of
:mod:`fla.ops.attn.tiles` at head dim 128, bf16, GQA 4:1 with window and gate. Pointers are compiled 16-byte
aligned as triton specializes them at a real launch (without that, the loads are not pipelined). Each line gives
the shared memory, and, from ``ptxas -v``, the registers per thread and the bytes spilled.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fla.ops.attn import decoding, parallel, tiles
from fla.ops.common import cumsum

TARGET = GPUTarget("cuda", 90, 32)
_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTXAS = [os.path.join(_BIN, name) for name in ("ptxas", "ptxas-blackwell")]  # the first that reads triton's PTX


def jit_function(kernel):
    """The JITFunction under lean_launch / heuristics / autotune wrappers."""
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = getattr(kernel, "kernel", None) or kernel.fn
    return kernel


def ptxas_usage(ptx: str) -> str:
    """``regs=R spill=S`` of the PTX for sm_90a (empty when ptxas is not at hand)."""
    out = ""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        for ptxas in filter(os.path.exists, PTXAS):
            run = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", src, "-o", os.path.join(d, "k.cubin")],
                                 capture_output=True, text=True)  # fmt: skip
            if run.returncode == 0:
                out = run.stderr
                break
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores", out)
    return f"regs={regs.group(1) if regs else '?'} spill={spill.group(1) if spill else '?'}"


def compile_kernel(kernel, types: dict[str, str], constants: dict, warps: int = 4, stages: int = 2) -> str:
    """Compile with ``types`` for the pointer / scalar arguments and ``constants`` for the rest; a usage summary."""
    fn = jit_function(kernel)
    constants = {name: value for name, value in constants.items() if name in fn.arg_names}  # shared dicts
    signature = {name: "constexpr" if name in constants else types.get(name, "*fp32") for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(name),): value for name, value in constants.items()}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if signature[n].startswith("*")}
    out = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned), target=TARGET,
                         options={"num_warps": warps, "num_stages": stages})  # fmt: skip
    return f"ptx={len(out.asm['ptx'])} smem={out.metadata.shared} {ptxas_usage(out.asm['ptx'])}"


KERNELS = (
    ("fwd", parallel.parallel_attn_fwd_kernel, tiles.FWD_TILES),
    ("dq", parallel.parallel_attn_bwd_dq_kernel, tiles.DQ_TILES),
    ("dkv", parallel.parallel_attn_bwd_dkv_kernel, tiles.DKV_TILES),
)
TYPES = {
    **{name: "*bf16" for name in ("q", "k", "v", "o", "do", "dq", "dk", "dv")},
    **{"cu_seqlens": "*i32", "chunk_indices": "*i32", "scale": "fp64", "T": "i32", "W": "i32"},
}


def _flags(varlen: bool, window: bool, gate: bool) -> dict:
    sizes = dict(HQ=16, G=4, K=128, V=128, BK=128, BV=128, DOT_PRECISION="tf32")
    flags = dict(sizes, USE_WINDOW=window, USE_G=gate, IS_VARLEN=varlen, HAS_SINK=gate)
    if not varlen:
        flags.update(cu_seqlens=None, chunk_indices=None)
    if not gate:
        flags.update(g=None, dg=None, sink_bias=None)
    return flags


def main() -> None:
    for varlen, window, gate in itertools.product((False, True), repeat=3):
        for name, kernel, candidates in KERNELS:
            BT, BS, warps, stages = candidates[0]
            flags = dict(_flags(varlen, window, gate), BT=BT, BS=BS)
            print(name, varlen, window, gate, candidates[0], compile_kernel(kernel, TYPES, flags, warps, stages))
    for name, kernel, candidates in KERNELS:
        for BT, BS, warps, stages in (*candidates[1:], *tiles.FALLBACK_TILES):
            flags = dict(_flags(False, True, True), BT=BT, BS=BS)
            usage = compile_kernel(kernel, TYPES, flags, warps, stages)
            print(name, "tile", (BT, BS, warps, stages), usage)
    for dlse in (False, True):
        flags = dict(V=128, BR=32, BV=128, HAS_DLSE=dlse, **({} if dlse else {"dlse": None}))
        types = {"o": "*bf16", "do": "*bf16", "N": "i32"}
        print("delta", dlse, compile_kernel(parallel.parallel_attn_bwd_delta_kernel, types, flags))
    types = {"q": "*bf16", "k": "*bf16", "v": "*bf16", "o": "*bf16", "cu_seqlens": "*i32", "scale": "fp64", "W": "i32"}
    for (window, gate), nsplit in itertools.product(itertools.product((False, True), repeat=2), (1, 8)):
        flags = dict(K=128, V=128, BS=32, BK=128, BV=128, NSPLIT=nsplit, USE_WINDOW=window, USE_G=gate,
                     HAS_SINK=gate, **({} if gate else {"g": None, "sink_bias": None}),
                     **({} if nsplit > 1 else {"o_part": None, "ml_part": None}))  # fmt: skip
        one = compile_kernel(decoding.attn_decoding_one_step_kernel, types, dict(flags, HQ=4, G=1))
        print("decode", window, gate, nsplit, one)
        group = dict(flags, HQ=16, G=4, BG=16, DOT_PRECISION="tf32")
        print("decode_group", window, gate, nsplit, compile_kernel(decoding.attn_decoding_group_kernel, types, group))
    for sink in (False, True):
        flags = dict(HQ=4, V=128, BV=128, NSPLIT=8, HAS_SINK=sink, **({} if sink else {"sink_bias": None}))
        print("decode_merge", sink, compile_kernel(decoding.attn_decoding_merge_kernel, {"o": "*bf16"}, flags))
    for reverse, varlen in itertools.product((False, True), repeat=2):
        types = {"g": "*fp32", "out": "*fp32", "cu_seqlens": "*i32", "scale": "fp64", "T": "i32"}
        flags = dict(H=4, BT=128, REVERSE=reverse, IS_VARLEN=varlen, **({} if varlen else {"cu_seqlens": None}))
        print("global_cumsum", reverse, varlen, compile_kernel(cumsum.global_cumsum_kernel, types, flags))


if __name__ == "__main__":
    main()
