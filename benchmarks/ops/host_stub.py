"""Host (Python) time of the Triton path of an op, on a CPU: launches stubbed, nothing computed.

The GPU machine is scarce; the host side of an op call (checks, layout bookkeeping, allocations,
autograd, the lean launcher's per-launch work) is plain Python and runs the same here. This forces
the ``"triton"`` backend for CPU tensors and replaces each launch by the lean launcher's own
per-call work (its signature key) without a launch, then times back-to-back fwd+bwd calls and
prints a cProfile table. Outputs are garbage (never read); only host time is measured. The figure
is this CPU's, not the GPU host's: use it to compare variants of the host code, side by side.

    python -m benchmarks.ops.host_stub [--ops chunk_simple_gla chunk_retention] [--calls 300] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import time

import torch


@contextlib.contextmanager
def stubbed_triton_path():
    """Inside: fla ops take their Triton path on CPU tensors and every launch is a no-op that still
    computes the lean launcher's signature (its per-launch host work)."""
    import fla.utils.backend as backend
    from fla.utils import launch

    def fake_getitem(self, grid):
        def run(*args, **kwargs):
            self._signature(0, args, kwargs)
            self.lean_launches += 1

        return run

    saved_get, saved_sel = launch.LeanKernel.__getitem__, backend.select_backend
    launch.LeanKernel.__getitem__ = fake_getitem
    modules = _modules_using_select_backend()
    for mod in modules:
        mod.select_backend = lambda *tensors: "triton"
    try:
        yield
    finally:
        launch.LeanKernel.__getitem__ = saved_get
        for mod in modules:
            mod.select_backend = saved_sel


def _modules_using_select_backend():
    import sys

    import fla.ops  # noqa: F401 - imports every op module

    return [m for name, m in list(sys.modules.items()) if name.startswith("fla.") and hasattr(m, "select_backend")]


def _ops(B: int, T: int, H: int, D: int) -> dict:
    import torch.nn.functional as F

    from fla.ops import chunk_gla, chunk_linear_attn, chunk_retention, chunk_simple_gla
    from fla.ops.delta_rule import chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dt = torch.bfloat16
    q, k, v = (torch.randn(B, T, H, D, dtype=dt) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H)).to(dt)
    gk = F.logsigmoid(torch.randn(B, T, H, D)).to(dt)
    beta = torch.rand(B, T, H).to(dt)
    return {
        "chunk_linear_attn": (lambda *a: chunk_linear_attn(*a, normalize=False), [q, k, v]),
        "chunk_retention": (chunk_retention, [q, k, v]),
        "chunk_simple_gla": (chunk_simple_gla, [q, k, v, g]),
        "chunk_gla": (chunk_gla, [q, k, v, gk]),
        "chunk_delta_rule": (chunk_delta_rule, [q, k, v, beta]),
        "chunk_gated_delta_rule": (chunk_gated_delta_rule, [q, k, v, g, beta]),
    }


def host_us(op, inputs: list[torch.Tensor], calls: int) -> float:
    """Median-of-5 host microseconds per fwd+bwd call of ``op(*inputs)`` with launches stubbed."""
    leaves = [t.detach().requires_grad_() for t in inputs]

    def call():
        out = op(*leaves)
        o = out[0] if isinstance(out, tuple) else out
        o.backward(torch.ones_like(o))
        for t in leaves:
            t.grad = None

    for _ in range(10):
        call()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return sorted(runs)[2], call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", default=None)
    p.add_argument("--shape", default="1,128,4,64", help="B,T,H,D (small: the allocations are real)")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--profile", action="store_true", help="also print a cProfile table per op")
    args = p.parse_args()
    torch.set_num_threads(1)
    B, T, H, D = (int(x) for x in args.shape.split(","))
    with stubbed_triton_path():
        for name, (op, inputs) in _ops(B, T, H, D).items():
            if args.ops and name not in args.ops:
                continue
            us, call = host_us(op, inputs, args.calls)
            print(f"{name}: {us:.1f} us host per fwd+bwd call (launches stubbed, this CPU)")
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args.calls):
                    call()
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(22)
                print(out.getvalue())


if __name__ == "__main__":
    main()
