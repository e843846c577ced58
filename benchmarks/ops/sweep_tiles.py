"""Tile widths of the shared chunk-pipeline stages against fwd+bwd time, CUDA only (an experiment).

The GLA-family stages (`fla.ops.common`: state recurrence ``chunk_h``, output ``chunk_o``, backward
``chunk_bwd``) tile every feature dim at most 64 wide (:func:`fla.ops.common.tuning.block_size`), so
at D=128 the output and dv stages form the ``[BT, BT]`` scores twice (once per V block) and the
dq/dk stage forms ``do v^T`` twice (once per K block). This times each op's fwd+bwd (do_bench
median, ms, B=4 H=16 D=128 bf16) with the cap raised to 128 for one stage module at a time, with
and without 8-warp autotune configs, and checks every variant's outputs and gradients against the
default's (max relative difference: a miscompile shows up here, not as a fast time):

    python -m benchmarks.ops.sweep_tiles --T 2048 8192 --out sweep_tiles.md
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys

import torch
import triton
from triton.testing import do_bench

from benchmarks.ops.bench_chunk import _inputs, _ops, fwd_bwd_step

STAGE_MODULES = {"h": "fla.ops.common.chunk_h", "o": "fla.ops.common.chunk_o", "bwd": "fla.ops.common.chunk_bwd"}
STAGE_KERNELS = {
    "h": ["chunk_state_kernel"],
    "o": ["chunk_output_fwd_kernel"],
    "bwd": ["chunk_dv_bwd_kernel", "chunk_dqkg_bwd_kernel"],
}
VARIANTS = ("base", "o", "bwd", "h", "o+bwd", "o+bwd+h")


def _autotuner(kernel):
    node = kernel
    while node is not None and not isinstance(node, triton.runtime.autotuner.Autotuner):
        node = getattr(node, "fn", None)
    return node


@contextlib.contextmanager
def variant(stages: list[str], warps8: bool):
    """Raise the tile cap to 128 in ``stages`` (and add 8-warp configs to their kernels) inside the block."""
    import importlib

    from fla.ops.common.tuning import block_size

    saved = []
    for stage in stages:
        mod = importlib.import_module(STAGE_MODULES[stage])
        saved.append((mod, "block_size", mod.block_size))
        mod.block_size = lambda dim, cap=64: block_size(dim, cap=128)
        if warps8:  # new configs: forget the tuned choice (and the lean launcher's copy of it) while inside
            for name in STAGE_KERNELS[stage]:
                kernel = getattr(mod, name)
                tuner = _autotuner(kernel)
                saved += [(tuner, "configs", tuner.configs), (tuner, "cache", tuner.cache)]
                tuner.configs = tuner.configs + [triton.Config({}, num_warps=8, num_stages=s) for s in (2, 3)]
                tuner.cache = {}
                if hasattr(kernel, "_entries"):
                    saved.append((kernel, "_entries", kernel._entries))
                    kernel._entries = {}
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def _results(op, ts):
    for t in ts:
        t.grad = None
    out = op(*ts)
    o = out[0] if isinstance(out, tuple) else out
    torch.manual_seed(1)
    o.backward(torch.randn_like(o))
    return [o.detach().float()] + [t.grad.detach().float() for t in ts]


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(a, b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ops = "chunk_linear_attn chunk_retention chunk_simple_gla chunk_gla chunk_delta_rule chunk_gated_delta_rule"
    p.add_argument("--ops", nargs="*", default=ops.split())
    p.add_argument("--T", type=int, nargs="*", default=[2048, 8192])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ops = _ops("ours")
    rows = []
    for name in args.ops:
        op, gate = ops[name]
        for T in args.T:
            ts = _inputs(T, gate)
            ref = _results(op, ts)
            for v in args.variants:
                for warps8 in (False, True) if v != "base" else (False,):
                    stages = [] if v == "base" else v.split("+")
                    with variant(stages, warps8):
                        try:
                            rel = _rel(_results(op, ts), ref)
                            ms = float(
                                do_bench(
                                    fwd_bwd_step(lambda op=op, ts=ts: op(*ts)), grad_to_none=ts, return_mode="median"
                                )
                            )
                            cell = f"{ms:.3f}"
                        except Exception as e:  # noqa: BLE001 - a failing variant is a result (e.g. out of resources)
                            rel, cell = float("nan"), f"error: {type(e).__name__}"
                    rows.append((name, T, v + ("+8w" if warps8 else ""), cell, rel))
                    print(f"[sweep_tiles] {rows[-1]}", file=sys.stderr, flush=True)
            del ts
            torch.cuda.empty_cache()
    lines = [
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}",
        f"command: python -m benchmarks.ops.sweep_tiles {' '.join(sys.argv[1:])}",
        "",
        "| op | T | tiles 128 in | fwd+bwd ms | max rel diff vs base |",
        "|---|---|---|---|---|",
        *(f"| {n} | {T} | {v} | {c} | {r:.2e} |" for n, T, v, c, r in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
