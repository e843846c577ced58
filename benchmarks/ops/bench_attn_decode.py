"""One decoding step of softmax attention (``attn_decoding_one_step``) against its KV-cache read floor, CUDA only.

A decode batch of ``N`` sequences, each with ``T`` cached keys, 16 query heads, ``D = 128``, bf16: do_bench
medians (ms) of one step with the automatic split-KV count and with one split (every (sequence, head) pair
streamed by a single program, the kernel before the splits), and the floor: the bytes the step must read (the
keys and values of the cache, once) over the device-to-device copy bandwidth measured in the same run. The
issue's target is a step within 1.5x of the floor.

    python -m benchmarks.ops.bench_attn_decode --out outputs/ops_attn_decode.md
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.ops.bench_ssm import copy_bandwidth
from benchmarks.report import emit

HQ, D = 16, 128
CASES = [(32, 2048, 16), (32, 8192, 16), (8, 32768, 16), (32, 8192, 4)]  # (sequences, cached keys, kv heads)


def run() -> str:
    from triton.testing import do_bench

    from fla.ops.attn.decoding import _decoding_triton, decode_splits

    bandwidth = copy_bandwidth()  # bytes per ms
    rows = [
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; copy bandwidth {bandwidth / 1e6:.0f} GB/s",
        "",
        "| N | T | kv heads | splits | auto ms | 1-split ms | floor ms | auto / floor |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for N, T, H in CASES:
        cu = torch.arange(0, N * T + 1, T, device="cuda", dtype=torch.int32)
        k, v = (torch.randn(1, N * T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        q = torch.randn(1, N, HQ, D, device="cuda", dtype=torch.bfloat16)
        splits = decode_splits(N, HQ, N * T, q.device)

        args = (q, k, v, None, None, D**-0.5, cu, 1.0, None)
        auto = do_bench(lambda args=args, n=splits: _decoding_triton(*args, num_splits=n), return_mode="median")
        single = do_bench(lambda args=args: _decoding_triton(*args, num_splits=1), return_mode="median")
        floor = (k.numel() + v.numel()) * k.element_size() / bandwidth
        rows.append(f"| {N} | {T} | {H} | {splits} | {auto:.4f} | {single:.4f} | {floor:.4f} | {auto / floor:.2f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_attn_decode needs a CUDA device")
    emit(run(), args.out)


if __name__ == "__main__":
    main()
