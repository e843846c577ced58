"""Where the chunked ops' fwd+bwd time goes on a GPU (B=4, H=16, D=128, bf16).

For each op and T: do_bench of fwd+bwd (device time incl. idle gaps), the summed device time of its kernels (no idle
gaps), host time of one fwd+bwd call with the GPU kept busy, and a torch.profiler kernel table (device time per
kernel, summed over 5 calls). ``--fwd-only``: the same for the forward alone under ``torch.no_grad`` (what
``bench_chunk``'s fwd_ms times).

    python -m benchmarks.ops.profile_chunk [--ops chunk_gla chunk_simple_gla] [--T 2048 8192] [--out F]

fla 0.6.0's kernels (``--impl fla``): run from outside the repository with fla's folder first on ``PYTHONPATH``, e.g.
``cd /tmp && PYTHONPATH=/tmp/fla060:$REPO python -m benchmarks.ops.profile_chunk --impl fla --autotune-ms 30``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from benchmarks.ops.bench_chunk import _ops, fwd_bwd_step, op_inputs, short_autotune
from benchmarks.report import emit


def host_time(step, n: int = 20) -> float:
    """Host ms per fwd+bwd ``step()`` (python + launches), measured while a long kernel keeps the GPU busy."""
    busy = torch.empty(1 << 28, device="cuda")
    torch.cuda.synchronize()
    busy.mul_(1.0).mul_(1.0).mul_(1.0)  # queue ~ms of work so launches never wait on the device
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return 1e3 * (t1 - t0) / n


def kernel_profile(step, n: int = 5) -> tuple[float, str]:
    """Summed kernel device ms per fwd+bwd ``step()`` (no idle gaps) and the profiler's kernel table."""
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3 / n
    return busy, prof.key_averages().table(sort_by="device_time_total", row_limit=14, max_name_column_width=60)


def forward_step(op, ts):
    """A callable running ``op(*ts)`` under ``torch.no_grad`` (the forward alone, as ``bench_chunk``'s fwd_ms)."""

    def step():
        with torch.no_grad():
            op(*ts)

    return step


def python_profile(step, n: int = 50) -> str:
    """cProfile of ``n`` fwd+bwd ``step()`` calls: where the host time goes (top functions by own time)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="*", default=["chunk_linear_attn", "chunk_simple_gla", "chunk_gla"])
    parser.add_argument("--T", type=int, nargs="*", default=[2048, 8192])
    parser.add_argument("--tables", action="store_true", help="also print the profiler kernel tables")
    parser.add_argument(
        "--fwd-only", action="store_true", help="the forward alone under torch.no_grad (bench_chunk's fwd_ms)"
    )
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile of the host side")
    parser.add_argument(
        "--impl",
        choices=["ours", "fla"],
        default="ours",
        help="fla: profile fla 0.6.0 (run from outside the repo with its folder first on PYTHONPATH)",
    )
    parser.add_argument(
        "--autotune-ms", type=float, default=None, help="autotuners benchmark each config this long (as bench_chunk)"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.autotune_ms is not None:
        short_autotune(args.autotune_ms)
    ops = _ops(args.impl)
    what = "fwd (no_grad)" if args.fwd_only else "fwd+bwd"
    lines = [f"| op | T | do_bench {what} ms | kernels {what} ms | host ms/call |", "|---|---|---|---|---|"]
    for name in args.ops:
        op, gate = ops[name]
        for T in args.T:
            ts = op_inputs(gate, T)
            step = forward_step(op, ts) if args.fwd_only else fwd_bwd_step(lambda op=op, ts=ts: op(*ts))
            eager = do_bench(step, grad_to_none=ts, return_mode="median")
            busy, table = kernel_profile(step)
            host = host_time(step)
            lines.append(f"| {name} | {T} | {eager:.3f} | {busy:.3f} | {host:.3f} |")
            print(lines[-1], flush=True)
            if args.tables:
                print(f"\n### {name} T={T}\n", table, flush=True)
            if args.cprofile:
                print(f"\n### host profile {name} T={T}\n", python_profile(step), flush=True)
    table = "\n".join(lines) + "\n"
    emit(table, args.out)


if __name__ == "__main__":
    main()
