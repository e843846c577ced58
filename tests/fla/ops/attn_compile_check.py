"""Compile every softmax-attention kernel for sm_90 without a GPU (Triton's frontend, optimizer and ptxas).

Run in a process without ``TRITON_INTERPRET`` (the interpreter accepts code the compiler refuses, e.g. a plain
module global read in a kernel): ``python -m tests.fla.ops.attn_compile_check`` prints one line per kernel.
"""

from __future__ import annotations

import itertools

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fla.ops.attn import decoding, parallel
from fla.ops.common import cumsum

TARGET = GPUTarget("cuda", 90, 32)


def jit_function(kernel):
    """The JITFunction under lean_launch / heuristics / autotune wrappers."""
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = getattr(kernel, "kernel", None) or kernel.fn
    return kernel


def compile_kernel(kernel, types: dict[str, str], constants: dict) -> int:
    """Compile with ``types`` for the pointer / scalar arguments and ``constants`` for the rest; PTX size."""
    fn = jit_function(kernel)
    constants = {name: value for name, value in constants.items() if name in fn.arg_names}  # shared dicts
    signature = {name: "constexpr" if name in constants else types.get(name, "*fp32") for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(name),): value for name, value in constants.items()}
    out = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=TARGET,
                         options={"num_warps": 4, "num_stages": 2})  # fmt: skip
    return len(out.asm["ptx"])


def main() -> None:
    sizes = dict(HQ=4, G=2, K=128, V=128, BT=64, BS=32, BK=128, BV=128, DOT_PRECISION="tf32")
    for varlen, window, gate in itertools.product((False, True), repeat=3):
        types = {"q": "*bf16", "k": "*bf16", "v": "*bf16", "o": "*bf16", "do": "*bf16", "dq": "*bf16",
                 "cu_seqlens": "*i32", "chunk_indices": "*i32", "scale": "fp32", "T": "i32", "W": "i32"}  # fmt: skip
        flags = dict(sizes, USE_WINDOW=window, USE_G=gate, IS_VARLEN=varlen)
        absent = {} if varlen else {"cu_seqlens": None, "chunk_indices": None}
        if not gate:
            absent.update(g=None, dg=None)
        fwd = dict(flags, **absent, HAS_SINK=gate, **({} if gate else {"sink_bias": None}))
        print("fwd", varlen, window, gate, compile_kernel(parallel.parallel_attn_fwd_kernel, types, fwd))
        for kernel in (parallel.parallel_attn_bwd_dq_kernel, parallel.parallel_attn_bwd_dkv_kernel):
            print(kernel.__name__, varlen, window, gate, compile_kernel(kernel, types, dict(flags, **absent)))
    types = {"q": "*bf16", "k": "*bf16", "v": "*bf16", "o": "*bf16", "cu_seqlens": "*i32", "scale": "fp32", "W": "i32"}
    for window, gate in itertools.product((False, True), repeat=2):
        flags = dict(HQ=4, G=2, K=128, V=128, BS=32, BK=128, BV=128, USE_WINDOW=window, USE_G=gate, HAS_SINK=gate)
        absent = {} if gate else {"g": None, "sink_bias": None}
        ptx = compile_kernel(decoding.attn_decoding_one_step_kernel, types, {**flags, **absent})
        print("decode", window, gate, ptx)
    for reverse, varlen in itertools.product((False, True), repeat=2):
        types = {"g": "*fp32", "out": "*fp32", "cu_seqlens": "*i32", "scale": "fp32", "T": "i32"}
        flags = dict(H=4, BT=128, REVERSE=reverse, IS_VARLEN=varlen, **({} if varlen else {"cu_seqlens": None}))
        print("global_cumsum", reverse, varlen, compile_kernel(cumsum.global_cumsum_kernel, types, flags))


if __name__ == "__main__":
    main()
