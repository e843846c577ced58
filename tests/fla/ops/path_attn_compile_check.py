"""Compile every PaTH-attention kernel for sm_90 without a GPU (Triton's frontend, optimizer and ptxas).

Run in a process without ``TRITON_INTERPRET``: ``python -m tests.fla.ops.path_attn_compile_check`` prints one
line per kernel variant (the helpers are the softmax-attention check's).
"""

from __future__ import annotations

import itertools

from fla.ops.path_attn import chunked, parallel
from tests.fla.ops.attn_compile_check import compile_kernel


def main() -> None:
    for varlen, K in itertools.product((False, True), (64, 128)):
        absent = {} if varlen else {"cu_seqlens": None, "chunk_indices": None}
        types = {"k": "*bf16", "w": "*fp32", "beta": "*fp32", "cu_seqlens": "*i32", "chunk_indices": "*i32",
                 "T": "i32"}  # fmt: skip
        flags = dict(H=4, K=K, BT=64, BK=K, DOT_PRECISION="tf32", IS_VARLEN=varlen, **absent)
        print("prepare", varlen, K, compile_kernel(parallel.path_attn_prepare_kernel, types, flags))
        ptx = compile_kernel(parallel.path_attn_key_cache_kernel, {**types, "k_cache": "*bf16"}, flags)
        print("key_cache", varlen, K, ptx)
        for gate in (False, True):
            types = {"q": "*bf16", "k": "*bf16", "v": "*bf16", "o": "*bf16", "w": "*fp32", "cu_seqlens": "*i32",
                     "chunk_indices": "*i32", "scale": "fp64", "T": "i32"}  # fmt: skip
            flags = dict(HQ=4, G=2, K=K, V=K, BT=64, BK=K, BV=K, DOT_PRECISION="tf32", USE_G=gate, IS_VARLEN=varlen)
            flags.update(absent, **({} if gate else {"g": None}))
            print("fwd", varlen, K, gate, compile_kernel(parallel.path_attn_fwd_kernel, types, flags))
    # the training walk (chunk layout: no varlen flag); v and do in bf16, the rest float32
    for K, gate in itertools.product((64, 128), (False, True)):
        types = {"v": "*bf16", "o": "*bf16", "do": "*bf16", "chunk_pos": "*i32", "seq_chunks": "*i32",
                 "pair_off": "*i64", "scale": "fp64"}  # fmt: skip
        flags = dict(HQ=4, G=2, K=K, V=K, BT=64, BK=K, BV=K, DOT_PRECISION="tf32", USE_G=gate)
        flags.update({} if gate else {"g": None})
        kernels = (chunked.path_inter_fwd_kernel, chunked.path_inter_bwd_dq_kernel, chunked.path_inter_bwd_dkv_kernel)
        for kernel in kernels:
            print(kernel.__name__, K, gate, compile_kernel(kernel, types, dict(flags, STORE_X=True)))


if __name__ == "__main__":
    main()
