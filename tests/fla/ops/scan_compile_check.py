"""Compile the scan-type kernels landed without a GPU run for sm_90 (Triton's frontend, optimizer and ptxas): the
selective scan (fla/ops/mamba/scan.py), the SSD's fused input / skip stages (fla/ops/mamba2/ssd_io.py), ABC's
slot-gate scan (fla/ops/gsa/gate_scan.py) and NSA's top-k selection (fla/ops/nsa/topk.py). Run without
``TRITON_INTERPRET``: ``python -m tests.fla.ops.scan_compile_check`` prints one line per kernel variant.
"""

from __future__ import annotations

import itertools

from fla.ops.gsa import gate_scan
from fla.ops.mamba import scan, scan_sequential
from fla.ops.mamba2 import ssd_io
from fla.ops.nsa import topk
from tests.fla.ops.attn_compile_check import compile_kernel

IO_TYPES = {"x": "*bf16", "v": "*bf16", "dv": "*bf16", "dx": "*bf16", "y": "*bf16", "o": "*bf16", "do": "*bf16",
            "dt": "*fp32", "ddt": "*fp32", "D": "*fp32", "dD": "*fp32", "R": "i32", "N": "i32", "dt_raw": "*bf16",
            "dt_low": "fp32", "dt_high": "fp32"}  # fmt: skip
GATE_TYPES = {
    "s": "*bf16",
    "s_out": "*bf16",
    "ds_out": "*bf16",
    "ds": "*bf16",
    "cu_seqlens": "*i32",
    "chunk_indices": "*i32",
    "chunk_offsets": "*i32",
    "T": "i32",
}
SCAN_TYPES = {"x": "*bf16", "dt": "*bf16", "Bm": "*bf16", "Cm": "*bf16", "z": "*bf16", "do": "*bf16", "y": "*bf16",
              "dx": "*bf16", "ddt": "*bf16", "dz": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32",
              "chunk_offsets": "*i32", "T": "i32", "R": "i32"}  # fmt: skip


def main() -> None:
    sizes = dict(H=32, P=64, BR=32, BP=64)
    for bias, limit in itertools.product((False, True), repeat=2):
        flags = dict(sizes, HAS_BIAS=bias, HAS_LIMIT=limit)
        print("ssd_in_fwd_kernel", bias, limit, compile_kernel(ssd_io.ssd_in_fwd_kernel, IO_TYPES, flags))
        for skip, per_channel in ((False, False), (True, False), (True, True)):
            flags = dict(flags, HAS_SKIP=skip, D_PER_CHANNEL=per_channel)
            ptx = compile_kernel(ssd_io.ssd_in_bwd_kernel, IO_TYPES, flags)
            print("ssd_in_bwd_kernel", bias, limit, skip, per_channel, ptx)
    for per_channel in (False, True):
        for kernel in (ssd_io.ssd_skip_fwd_kernel, ssd_io.ssd_skip_bwd_kernel):
            ptx = compile_kernel(kernel, IO_TYPES, dict(sizes, H=32, D_PER_CHANNEL=per_channel))
            print(kernel.__name__, per_channel, ptx)
    for z0, varlen in itertools.product((False, True), repeat=2):
        absent = ({} if z0 else {"z0": None, "dz0": None}) | (
            {} if varlen else {"cu_seqlens": None, "chunk_indices": None, "chunk_offsets": None}
        )
        flags = dict(C=1024, BT=gate_scan.BT, BC=32, USE_Z0=z0, IS_VARLEN=varlen, **absent)
        gate_kernels = (gate_scan.additive_gate_lse_kernel, gate_scan.additive_gate_carry_kernel,
                        gate_scan.additive_gate_fwd_kernel, gate_scan.additive_gate_bwd_local_kernel,
                        gate_scan.additive_gate_bwd_carry_kernel, gate_scan.additive_gate_bwd_kernel)  # fmt: skip
        for kernel in gate_kernels:
            print(kernel.__name__, z0, varlen, compile_kernel(kernel, GATE_TYPES, flags))
    _mamba()
    _nsa_topk()


def _mamba() -> None:
    """The selective scan's chunk kernels at Mamba-130M sizes (bf16 activations), every optional term on, then
    bare (no D / z / dt_bias / softplus) and at the largest d_state."""
    terms = dict(SOFTPLUS=True, HAS_D=True, HAS_Z=True, HAS_BIAS=True)
    bare = dict(SOFTPLUS=False, HAS_D=False, HAS_Z=False, HAS_BIAS=False, D=None, z=None, dt_bias=None, dz=None,
                dD_part=None, dbias_part=None)  # fmt: skip
    fwd = dict(Di=1536, Ds=16, BT=scan.CHUNK_SIZE, BD=scan.FWD_CHANNELS)
    bwd = dict(fwd, BD=scan.BWD_CHANNELS)
    for varlen in (False, True):
        absent = {} if varlen else {"cu_seqlens": None, "chunk_indices": None, "chunk_offsets": None}
        flags = dict(terms, IS_VARLEN=varlen, **absent)
        for reverse in (False, True):
            state = {**fwd, **flags, "REVERSE": reverse} | ({} if reverse else {"z": None, "HAS_Z": False})
            ptx = compile_kernel(scan.mamba_chunk_state_kernel, SCAN_TYPES, state)
            print("mamba_chunk_state_kernel", varlen, reverse, ptx)
            carry = dict(fwd, **flags, BD=32, BS=16, REVERSE=reverse, USE_INITIAL=True, STORE_FINAL=True)
            ptx = compile_kernel(scan.mamba_chunk_carry_kernel, SCAN_TYPES, carry)
            print("mamba_chunk_carry_kernel", varlen, reverse, ptx)
        for kernel, sizes in ((scan.mamba_chunk_output_fwd_kernel, fwd), (scan.mamba_chunk_bwd_kernel, bwd)):
            print(kernel.__name__, varlen, compile_kernel(kernel, SCAN_TYPES, {**sizes, **flags}))
    plain = dict(IS_VARLEN=False, cu_seqlens=None, chunk_indices=None, **bare)
    for kernel, sizes in ((scan.mamba_chunk_output_fwd_kernel, fwd), (scan.mamba_chunk_bwd_kernel, bwd)):
        print(kernel.__name__, "bare", compile_kernel(kernel, SCAN_TYPES, {**sizes, **plain}))
    big = {**bwd, "Ds": 64, **terms, "IS_VARLEN": False, "cu_seqlens": None, "chunk_indices": None}
    print("mamba_chunk_bwd_kernel Ds=64", compile_kernel(scan.mamba_chunk_bwd_kernel, SCAN_TYPES, big))
    _mamba_sequential(terms, bare)


def _mamba_sequential(terms: dict, bare: dict) -> None:
    """The one-pass kernels (fla/ops/mamba/scan_sequential.py) at each state-group count (= warps), dense and
    varlen with every term and the initial / final states, then bare."""
    seq = dict(Di=1536, Ds=16, BT=scan.CHUNK_SIZE, BD=scan_sequential.CHANNELS)
    states = dict(USE_INITIAL=True, STORE_FINAL=True, USE_FINAL_GRAD=True, STORE_INITIAL_GRAD=True)
    kernels = (scan_sequential.mamba_scan_fwd_kernel, scan_sequential.mamba_scan_bwd_kernel)
    for SG, varlen in itertools.product((1, 2, 4), (False, True)):
        absent = {} if varlen else {"cu_seqlens": None, "chunk_offsets": None}
        flags = dict(seq, **terms, **states, SG=SG, IS_VARLEN=varlen, **absent)
        for kernel in kernels:
            print(kernel.__name__, SG, varlen, compile_kernel(kernel, SCAN_TYPES, flags, warps=SG, stages=1))
    none = dict(h0=None, ht=None, dht=None, dh0=None, dD_acc=None, dbias_acc=None)
    plain = dict(seq, **bare, **none, SG=4, IS_VARLEN=False, cu_seqlens=None, chunk_offsets=None,
                 USE_INITIAL=False, STORE_FINAL=False, USE_FINAL_GRAD=False, STORE_INITIAL_GRAD=False)  # fmt: skip
    for kernel in kernels:
        print(kernel.__name__, "bare", compile_kernel(kernel, SCAN_TYPES, plain, warps=4, stages=1))


def _nsa_topk() -> None:
    """NSA's top-k kernel at the benchmark's sizes (16 query heads per key/value head, head dim 128, blocks of 64,
    16 selected) for 64 to 1024 blocks per sequence (the kernel's cap), with and without per-query counts."""
    types = {"q": "*bf16", "kc": "*bf16", "lse": "*fp32", "tok_pos": "*i32", "tok_boc": "*i32", "counts": "*i32",
             "out": "*i32", "scale": "fp32"}  # fmt: skip
    for BC, BK, warps in ((64, 64, 4), (128, 64, 4), (256, 64, 8), (topk.MAX_BLOCKS, 32, 8)):
        for counts in (False, True):
            flags = dict(HQ=16, H=1, G=16, K=128, BS=64, S=16, BG=16, BK=BK, BC=BC, BSL=16, DOT_PRECISION="tf32",
                         HAS_COUNTS=counts, **({} if counts else {"counts": None}))  # fmt: skip
            print("nsa_topk_kernel", BC, counts, compile_kernel(topk.nsa_topk_kernel, types, flags, warps, 1))


if __name__ == "__main__":
    main()
