"""Where the host time of an op call goes: ``cProfile`` of back-to-back fwd+bwd calls, CUDA only.

    python -m benchmarks.ops.profile_host [--ops chunk_gla chunk_delta_rule] [--calls 200] [--out FILE]

Uses the tiny shapes of :mod:`benchmarks.ops.launch_overhead` (the device idles on the host there),
warms each op up (compilation, autotuning) and then profiles ``--calls`` fwd+bwd calls: the top
functions by own time and by cumulative time, per call in microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import torch

from benchmarks.ops.launch_overhead import _ops, host_us
from benchmarks.report import emit


def profile_op(name: str, calls: int, top: int = 35) -> str:
    """The report of one op: host us per fwd+bwd call, then pstats tables (tottime, cumtime)."""
    fn, inputs = _ops()[name]
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    grad = torch.randn_like(out.float()).to(out.dtype)

    def call():
        fn(*leaves).backward(grad)
        for t in leaves:
            t.grad = None

    us = host_us(call, reps=calls)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        call()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    text.write(f"## {name}: {us:.1f} host us per fwd+bwd call ({calls} calls profiled; times below are totals)\n\n")
    for key in ("tottime", "cumtime"):
        stats = pstats.Stats(prof, stream=text)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=["chunk_gla", "chunk_delta_rule", "rms_norm"])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_host needs a CUDA device")
    report = "\n".join(profile_op(name, args.calls) for name in args.ops)
    emit(report, args.out)


if __name__ == "__main__":
    main()
