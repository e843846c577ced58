"""Where the fused norms' time goes on a GPU (bf16, [16384, D]).

* device time (CUDA-graph replays) of ``norm_fwd`` / ``norm_bwd`` per launch config, with the registers /
  spills / shared memory the compiler gave each config (plain do_bench is host-bound at these sizes);
* the same for a second copy of the kernels module (``--before PATH``, e.g. the previous version);
* host time per call at a tiny shape (where the GPU is idle), split into its pieces;
* a torch.profiler trace of one fwd+bwd (kernels and their device times).

python -m benchmarks.modules.profile_norm [--host] [--kernels] [--bench] [--sweep] [--trace]
    [--before PATH [--old-warps]] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

import fla.modules.norm as fnorm
import fla.modules.norm_kernels as nk

N = 16384
DIMS = (2048, 4096)
KINDS = ("rms", "rms_res", "layer", "gated")
DTYPE = torch.bfloat16
JSONL: str | None = None  # --json: where log() appends its rows


def log(**row) -> None:
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if JSONL:
        with open(JSONL, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    """Stands in for a ``@triton.jit`` kernel and remembers the last compiled kernel it launched."""

    def __init__(self, kernel):
        self.kernel, self.last = kernel, None

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.last = self.kernel[grid](*args, **kwargs)
            return self.last

        return launch

    def resources(self) -> dict:
        k = self.last
        if k is None:
            return {}
        return {"regs": getattr(k, "n_regs", "?"), "spills": getattr(k, "n_spills", "?"),
                "smem": getattr(k.metadata, "shared", "?")}  # fmt: skip


def case(kind: str, D: int):
    """``(fwd(mod), bwd(mod), bytes_fwd, bytes_bwd)`` for one norm flavour on fresh random inputs."""
    dev = "cuda"
    x = torch.randn(N, D, device=dev, dtype=DTYPE)
    w = torch.randn(D, device=dev, dtype=DTYPE)
    b = torch.randn(D, device=dev, dtype=DTYPE) if kind == "layer" else None
    r = torch.randn(N, D, device=dev, dtype=DTYPE) if kind == "rms_res" else None
    g = torch.randn(N, D, device=dev, dtype=DTYPE) if kind == "gated" else None
    is_rms, act = kind != "layer", "swish" if kind == "gated" else "none"
    h_dtype = DTYPE if r is not None else None

    def fwd(mod):
        return mod.norm_fwd(x, r, g, w, b, 1e-5, 1, is_rms, act, h_dtype)

    y, h, mean, rstd = fwd(nk)
    xs = h if h is not None else x
    dy = torch.randn_like(y)

    def bwd(mod):
        return mod.norm_bwd(xs, g, w, b, mean, rstd, dy, None, 1, is_rms, act, DTYPE, h_dtype, g is not None,
                            True, b is not None)  # fmt: skip

    tile = N * D * 2
    n_fwd = {"rms": 2, "rms_res": 4, "layer": 2, "gated": 3}[kind]
    n_bwd = {"rms": 3, "rms_res": 3, "layer": 3, "gated": 5}[kind]  # dres aliases dx
    return fwd, bwd, n_fwd * tile, n_bwd * tile


def fixed(cfg, group_width: int):
    """A config function that ignores the group width."""
    return cfg


def partial_sum(part: torch.Tensor) -> torch.Tensor:
    return part.sum(0).to(DTYPE)


def bench(fn: Callable, rep: int = 30) -> float:
    return float(do_bench(fn, warmup=5, rep=rep, return_mode="median"))


def graph_bench(fn: Callable) -> float:
    """Device time alone: fn replayed from a CUDA graph (no host launch gaps)."""
    try:
        return float(triton.testing.do_bench_cudagraph(fn, rep=30, return_mode="median"))
    except Exception as e:  # noqa: BLE001 - report and go on
        print("cudagraph failed:", repr(e)[:200])
        return float("nan")


def gbps(nbytes: int, ms: float) -> float:
    return round(nbytes / ms / 1e6, 0)


def sweep_new(kinds=("rms", "gated", "layer")) -> None:
    """Device time (CUDA-graph replays) of the current module per launch config; backward first."""
    fwd_default, bwd_default, per_sm = nk.fwd_config, nk.bwd_config, nk._BWD_PROGRAMS_PER_SM
    rec_f, rec_b = Recorder(nk.norm_fwd_kernel), Recorder(nk.norm_bwd_kernel)
    nk.norm_fwd_kernel, nk.norm_bwd_kernel = rec_f, rec_b
    try:
        for part in ("bwd", "fwd"):
            for D in DIMS:
                for kind in kinds:
                    fwd, bwd, bf, bb = case(kind, D)
                    bd = triton.next_power_of_2(D)
                    for bt in (1, 2):
                        for nw in (4, 8, 16):
                            cfg = nk.TileConfig(bt, bd, nw)
                            if part == "fwd":
                                nk.fwd_config = functools.partial(fixed, cfg)
                                ms = graph_bench(functools.partial(fwd, nk))
                                log(part="sweep_fwd", kind=kind, D=D, BT=bt, warps=nw, ms=round(ms, 4),
                                    gbps=gbps(bf, ms), **rec_f.resources())  # fmt: skip
                                continue
                            nk.bwd_config = functools.partial(fixed, cfg)
                            for k in (2, 4):
                                nk._BWD_PROGRAMS_PER_SM = k
                                nk._bwd_grid.cache_clear()
                                ms = graph_bench(functools.partial(bwd, nk))
                                log(part="sweep_bwd", kind=kind, D=D, BT=bt, warps=nw, per_sm=k, ms=round(ms, 4),
                                    gbps=gbps(bb, ms), **rec_b.resources())  # fmt: skip
                    nk.fwd_config, nk.bwd_config, nk._BWD_PROGRAMS_PER_SM = fwd_default, bwd_default, per_sm
                    nk._bwd_grid.cache_clear()
    finally:
        nk.norm_fwd_kernel, nk.norm_bwd_kernel = rec_f.kernel, rec_b.kernel
        nk.fwd_config, nk.bwd_config, nk._BWD_PROGRAMS_PER_SM = fwd_default, bwd_default, per_sm
        nk._bwd_grid.cache_clear()


def kernels_default(mods: dict) -> None:
    """Every module's default (or autotuned) launch: plain do_bench and CUDA-graph device time."""
    for D in DIMS:
        for kind in KINDS:
            fwd, bwd, bf, bb = case(kind, D)
            for name, mod in mods.items():
                fwd(mod), bwd(mod)  # compile / autotune first
                f, b = functools.partial(fwd, mod), functools.partial(bwd, mod)
                f_ms, b_ms, fg, bg = bench(f), bench(b), graph_bench(f), graph_bench(b)
                log(part="default", mod=name, kind=kind, D=D, fwd_ms=round(f_ms, 4), bwd_ms=round(b_ms, 4),
                    fwd_graph_ms=round(fg, 4), bwd_graph_ms=round(bg, 4), fwd_gbps=gbps(bf, fg),
                    bwd_gbps=gbps(bb, bg))  # fmt: skip
    for name, mod in mods.items():  # what an autotuner picked, per key
        for kernel in ("norm_fwd_kernel", "norm_bwd_kernel"):
            tuner = getattr(getattr(mod, kernel), "fn", None)
            cache = getattr(tuner, "cache", None) if hasattr(tuner, "configs") else None
            if isinstance(cache, dict):
                for key, cfg in cache.items():
                    log(part="autotuned", mod=name, kernel=kernel, key=str(key), config=str(cfg))


def bench_rows(mods: dict) -> None:
    """benchmarks/modules/bench_norm.py rows (fla vs torch eager) with each kernels module."""
    from benchmarks.modules import bench_norm

    saved = fnorm.norm_fwd, fnorm.norm_bwd
    try:
        for name, mod in mods.items():
            fnorm.norm_fwd, fnorm.norm_bwd = mod.norm_fwd, mod.norm_bwd
            for row in bench_norm.rows():
                if row["impl"] == "fla" or name == "new":
                    log(part="bench", mod=name if row["impl"] == "fla" else "-", **row)
    finally:
        fnorm.norm_fwd, fnorm.norm_bwd = saved


def old_per_warps(old) -> None:
    """The previous module's backward with each of its autotune configs forced (no tuning)."""
    auto = old.norm_bwd_kernel.fn
    configs = list(auto.configs)
    rec = Recorder(old.norm_bwd_kernel)
    old.norm_bwd_kernel = rec
    try:
        for D in DIMS:
            fwd, bwd, bf, bb = case("rms", D)
            for cfg in configs:
                auto.configs, auto.cache = [cfg], {}
                ms = bench(functools.partial(bwd, old))
                log(part="old_bwd_cfg", D=D, cfg=str(cfg), ms=round(ms, 4), gbps=gbps(bb, ms), **rec.resources())
    finally:
        old.norm_bwd_kernel, auto.configs, auto.cache = rec.kernel, configs, {}
    # the host-side partial sum of the old backward
    for D in DIMS:
        part = torch.randn(4 * torch.cuda.get_device_properties(0).multi_processor_count, D, device="cuda")
        ms = bench(functools.partial(partial_sum, part))
        log(part="old_partial_sum", D=D, shape=list(part.shape), ms=round(ms, 4))


def host_overhead(mods: dict) -> None:
    """Wall time per call at [4, 2048] (the GPU idles), i.e. what the host spends per call."""
    D = 2048
    x = torch.randn(4, D, device="cuda", dtype=DTYPE, requires_grad=True)
    w = torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)
    dy = torch.randn(4, D, device="cuda", dtype=DTYPE)

    def fwdbwd(f):
        def run():
            f().backward(dy)

        return run

    with torch.no_grad():
        log(part="host_us", impl="torch F.rms_norm fwd", us=per_call_us(lambda: F.rms_norm(x, (D,), w, 1e-5)))
    log(part="host_us", impl="torch F.rms_norm fwd+bwd", us=per_call_us(fwdbwd(lambda: F.rms_norm(x, (D,), w, 1e-5))))
    saved = fnorm.norm_fwd, fnorm.norm_bwd
    try:
        for name, mod in mods.items():
            fnorm.norm_fwd, fnorm.norm_bwd = mod.norm_fwd, mod.norm_bwd
            with torch.no_grad():
                log(part="host_us", impl=f"{name} rms_norm fwd", us=per_call_us(lambda: fnorm.rms_norm(x, w, None)))
                launch = functools.partial(mod.norm_fwd, x.detach(), None, None, w, None, 1e-5, 1, True, "none", None)
                log(part="host_us", impl=f"{name} norm_fwd launch only", us=per_call_us(launch))
            log(part="host_us", impl=f"{name} rms_norm fwd+bwd", us=per_call_us(fwdbwd(functools.partial(
                fnorm.rms_norm, x, w, None))))  # fmt: skip
    finally:
        fnorm.norm_fwd, fnorm.norm_bwd = saved
    log(part="host_us", impl="_check_inputs", us=per_call_us(lambda: fnorm._check_inputs(x, None, w, None, None, 1)))
    log(part="host_us", impl="select_backend", us=per_call_us(lambda: fnorm.select_backend(x, None, w, None, None)))
    log(part="host_us", impl="torch.empty x3", us=per_call_us(
        lambda: [torch.empty(4, D, device="cuda", dtype=DTYPE) for _ in range(3)]))  # fmt: skip


def host_breakdown() -> None:
    """Host time of the backward's pieces at [4, 2048]: on the main thread, and inside the autograd engine."""
    D, n = 2048, 4
    x = torch.randn(n, D, device="cuda", dtype=DTYPE, requires_grad=True)
    w = torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)
    dy = torch.randn(n, D, device="cuda", dtype=DTYPE)
    xd = x.detach()
    _, _, _, rstd = nk.norm_fwd(xd, None, None, w, None, 1e-5, 1, True, "none", None)
    dx, pw, dw = torch.empty_like(xd), torch.empty(528, D, device="cuda"), torch.empty_like(w)
    cfg = nk.bwd_config(D)
    launch = nk.norm_bwd_kernel[(528, 1)]
    args = (xd, None, w, None, None, rstd, dy, None, dx, None, None, pw, None, n, D, D, 1, 1)
    meta = {"IS_RMS": True, "ACT": "none", "BT": cfg.BT, "BD": cfg.BD, "num_warps": cfg.num_warps}
    flags = {"HAS_GATE": False, "HAS_W": True, "HAS_B": False, "HAS_DH": False, "HAS_DRES": False,
             "HAS_DG": False, "HAS_DW": True, "HAS_DB": False}  # fmt: skip
    reduce = nk.norm_bwd_reduce_kernel[(triton.cdiv(D, 32),)]
    pieces = {
        "norm_bwd (whole)": functools.partial(
            nk.norm_bwd, xd, None, w, None, None, rstd, dy, None, 1, True, "none", DTYPE, None, False, True, False
        ),
        "norm_bwd_kernel launch": functools.partial(launch, *args, **meta, **flags),
        "norm_bwd_reduce_kernel launch": functools.partial(
            reduce, pw, None, dw, None, 528, D, BP=64, BC=32, HAS_DW=True, HAS_DB=False, num_warps=4
        ),
        "torch partial sum + cast (alternative)": functools.partial(partial_sum, pw),
        "fla.utils.empty x4": lambda: [nk.empty(n, D, dtype=DTYPE, device=xd.device) for _ in range(4)],
    }
    for name, fn in pieces.items():
        log(part="host_piece", piece=name, us=per_call_us(fn))

    class Twice(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    log(part="host_piece", piece="fwd+bwd of a C++ op (x*2)", us=per_call_us(lambda: (x * 2).backward(dy)))
    log(
        part="host_piece",
        piece="fwd+bwd of a Python Function (x*2)",
        us=per_call_us(lambda: Twice.apply(x).backward(dy)),
    )
    # FusedNormFunction.backward and norm_bwd timed where they run (the autograd engine's thread)
    times: dict[str, list[float]] = {
        "FusedNormFunction.backward": [],
        "norm_bwd": [],
        "FusedNormFunction.forward": [],
    }  # backward ones run in the engine's thread

    def timed(name, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            times[name].append(time.perf_counter() - t0)
            return out

        return run

    saved = fnorm.FusedNormFunction.backward, fnorm.FusedNormFunction.forward, fnorm.norm_bwd
    fnorm.FusedNormFunction.backward = staticmethod(timed("FusedNormFunction.backward", saved[0]))
    fnorm.FusedNormFunction.forward = staticmethod(timed("FusedNormFunction.forward", saved[1]))
    fnorm.norm_bwd = timed("norm_bwd", saved[2])
    try:
        total = per_call_us(lambda: fnorm.rms_norm(x, w, None).backward(dy))
    finally:
        fnorm.FusedNormFunction.backward, fnorm.FusedNormFunction.forward = (
            staticmethod(saved[0]),
            staticmethod(saved[1]),
        )
        fnorm.norm_bwd = saved[2]
    log(part="host_piece", piece="rms_norm fwd+bwd (timers on)", us=total)
    for name, ts in times.items():
        ts = sorted(ts)
        log(part="host_piece", piece=f"{name} (in the fwd+bwd loop)", us=round(ts[len(ts) // 2] * 1e6, 1))


def per_call_us(fn: Callable, n: int = 300) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - t0) / n * 1e6, 1)


def trace(mods: dict) -> None:
    """torch.profiler: kernels and device time of 5 fwd+bwd of rms_norm [16384, 2048]."""
    from torch.profiler import ProfilerActivity, profile

    D = 2048
    x = torch.randn(N, D, device="cuda", dtype=DTYPE, requires_grad=True)
    w = torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)
    dy = torch.randn(N, D, device="cuda", dtype=DTYPE)
    saved = fnorm.norm_fwd, fnorm.norm_bwd
    try:
        for name, mod in mods.items():
            fnorm.norm_fwd, fnorm.norm_bwd = mod.norm_fwd, mod.norm_bwd
            for _ in range(3):
                fnorm.rms_norm(x, w, None).backward(dy)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    x.grad = w.grad = None
                    fnorm.rms_norm(x, w, None).backward(dy)
                torch.cuda.synchronize()
            print(f"--- trace {name}: rms_norm [{N}, {D}] fwd+bwd x5")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
    finally:
        fnorm.norm_fwd, fnorm.norm_bwd = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default=None, help="path of another norm_kernels.py to compare")
    parser.add_argument("--host", action="store_true", help="host time per call, and of the backward's pieces")
    parser.add_argument("--kernels", action="store_true", help="each module's default launches, device time")
    parser.add_argument("--old-warps", action="store_true", help="the --before backward per autotune config")
    parser.add_argument("--trace", action="store_true", help="torch.profiler table of one fwd+bwd")
    parser.add_argument("--bench", action="store_true", help="bench_norm rows with each module")
    parser.add_argument("--sweep", action="store_true", help="device time of every launch config (current module)")
    parser.add_argument("--json", default=None, help="append every row here as a JSON line")
    args = parser.parse_args()
    global JSONL
    JSONL = args.json
    print(f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}")
    mods = {"new": nk}
    if args.before:
        mods = {"before": load_module(args.before, "norm_kernels_before"), "new": nk}
    if args.host:
        host_overhead(mods)
        host_breakdown()
    if args.kernels:
        kernels_default(mods)
    if args.old_warps and args.before:
        old_per_warps(mods["before"])
    if args.trace:
        trace(mods)
    if args.bench:
        bench_rows(mods)
    if args.sweep:
        sweep_new()


if __name__ == "__main__":
    main()
