"""Training throughput: tokens/s, step time, peak memory and MFU of model configs, flame vs a plain eager loop.

    python benchmarks/train_throughput.py --config configs/gla_340M.json configs/transformer_340M.json \
        [--batch-size 8 --seq-len 2048 --steps 20 --warmup 5 --compile --ac none|full|selective] \
        [--impl flame,eager] [--set model.overrides=fuse_linear_cross_entropy=true ...] [--fla-path /tmp/fla060] \
        [--peak-tflops 989] [--profile DIR] --out train.md

Per config, on one device, with the same random token batches (data loading excluded):

* ``flame``: the real training step, ``flame.train.Trainer.train_step`` on a Trainer built in this
  process from a JobConfig (synthetic data through its ``dataloader_fn`` hook): on one rank a plain
  model under autocast bf16 (FSDP2 with bf16 parameters / fp32 reduction with ``--set
  parallelism.one_rank_fsdp=true``), the model config's fused modules, AdamW (fused on CUDA), gradient
  clipping, optional ``--compile``, ``--ac`` and any JobConfig override (``--set SECTION.KEY=VALUE``).
* ``eager``: the same HF model in a plain loop: fp32 parameters, ``torch.autocast`` bf16, fused AdamW,
  ``clip_grad_norm_``.
* ``--fla-path DIR``: the eager loop again with flash-linear-attention 0.6.0's model of the same
  config, in a separate process that imports ``fla`` from ``DIR`` (both packages are named ``fla``):
  ``pip install --no-deps --target /tmp/fla060 fla-core==0.6.0 flash-linear-attention==0.6.0``.

The first ``--warmup`` steps (compilation, autotuning, allocator growth) are not timed. MFU is
``flame.metrics.flops_per_token`` (6N + token-mixing FLOPs) x tokens/s over ``--peak-tflops``:
default 989 (H100/H200 dense bf16 spec); 794 is the bf16 matmul rate measured on an H200, which
gives the "achievable" utilization. On CPU everything runs in float32 and MFU is left out unless
``--peak-tflops`` is given.

This file imports nothing from the repository at module level: the same file is the worker of the
fla 0.6.0 process (``--worker eager``, run from outside the repository).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("model", "impl", "params_M", "tok_s", "step_ms", "peak_active_gib", "peak_reserved_gib", "tflops", "mfu_pct")
DEFAULT_PEAK_TFLOPS = 989.0
PROFILE_STEPS = 2


# ----------------------------------------------------------------------------- shared by all implementations


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> tuple[float, float]:
    """(peak allocated, peak reserved) GiB since the last reset; on CPU the process peak RSS twice."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3, torch.cuda.max_memory_reserved(device) / 1024**3
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    return rss, rss


def random_batches(vocab: int, batch_size: int, seq_len: int, count: int = 4, seed: int = 0) -> list[dict]:
    """``count`` CPU batches ``{"input_ids", "labels"} [B, T]`` of uniform random token ids."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def timed_steps(step, warmup: int, steps: int, device: torch.device, profile: str | None = None) -> dict:
    """Run ``step(i)`` ``warmup + steps`` times; time the last ``steps`` (synchronized per step).

    Returns ``step_s`` (median), ``total_s`` (sum of the timed steps) and peak memory of the timed
    steps. With ``profile`` (a path prefix), :data:`PROFILE_STEPS` more steps run under
    ``torch.profiler`` afterwards (never inside the timed ones) and write ``<profile>.trace.json``
    (chrome trace) and ``<profile>.txt`` (operator/kernel table by self device time, CPU: self CPU time).
    """
    for i in range(warmup):
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        print(f"warm-up step {i}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    gc.collect()
    _reset_peak(device)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    active, reserved = _peak_gib(device)
    if profile:
        write_profile(step, warmup + steps, device, profile)
    return {"step_s": statistics.median(times), "total_s": sum(times), "peak_active_gib": active,
            "peak_reserved_gib": reserved}  # fmt: skip


def write_profile(step, first: int, device: torch.device, prefix: str) -> None:
    """Profile :data:`PROFILE_STEPS` calls ``step(first), ...``; write the trace, kernel table and host profile.

    ``<prefix>.trace.json.gz``: chrome trace. ``<prefix>.txt``: the device time the kernels kept the
    GPU busy per step (against the step's wall time: a gap means the host is the bottleneck), the
    operator/kernel table by self device time (CPU: self CPU time), and a cProfile of
    :data:`PROFILE_STEPS` more steps (host functions by own time and by cumulative time).
    """
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for i in range(first, first + PROFILE_STEPS):
            step(i)
        _sync(device)
    wall_ms = 1e3 * (time.perf_counter() - t0) / PROFILE_STEPS
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(f"{prefix}.trace.json.gz")
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=40, max_name_column_width=80)
    busy_ms, n_kernels = device_busy_ms(f"{prefix}.trace.json.gz")
    busy_ms, n_kernels = busy_ms / PROFILE_STEPS, n_kernels / PROFILE_STEPS
    host = cProfile.Profile()
    first += PROFILE_STEPS
    t0 = time.perf_counter()
    host.enable()
    for i in range(first, first + PROFILE_STEPS):
        step(i)
    _sync(device)
    host.disable()
    host_ms = 1e3 * (time.perf_counter() - t0) / PROFILE_STEPS
    text = io.StringIO()
    stats = pstats.Stats(host, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    Path(f"{prefix}.txt").write_text(
        f"{PROFILE_STEPS} steps: device busy {busy_ms:.1f} ms/step ({n_kernels:.0f} kernels and copies, their union "
        f"in time) in {wall_ms:.1f} ms/step "
        f"under torch.profiler; {host_ms:.1f} ms/step under cProfile\n\nkernel table, sorted by {sort_by}\n"
        f"{table}\n\nhost (cProfile)\n{text.getvalue()}\n"
    )


def device_busy_ms(trace_path: str) -> tuple[float, int]:
    """(milliseconds the device was busy, number of device activities) in a chrome trace (``.json[.gz]``).

    Busy time is the union of the intervals of kernels, memcpys and memsets: the profiler's own
    ``gpu_user_annotation`` ranges (one per autograd Function, FSDP hook, optimizer step) also have
    device time but overlap the kernels they contain, so summing every CUDA event counts time twice.
    """
    import gzip

    opener = gzip.open if str(trace_path).endswith(".gz") else open
    with opener(trace_path, "rt") as f:
        events = json.load(f)["traceEvents"]
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
    )
    busy, end = 0.0, float("-inf")
    for start, stop in spans:  # union of intervals, in microseconds
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy / 1e3, len(spans)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def eager_run(
    config_path: str, batch_size: int, seq_len: int, warmup: int, steps: int, bf16: bool, profile: str | None = None
) -> dict:
    """The plain loop on whatever ``fla`` is importable: HF model, autocast bf16, fused AdamW, clipping.

    Returns the timing of :func:`timed_steps` plus ``n_params``, ``n_emb`` and the ``fla`` version and file.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla

    _progress(f"fla {fla.__version__} from {fla.__file__}")
    device = _device()
    config = AutoConfig.from_pretrained(config_path)
    config.use_cache = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device).train()
    _progress(f"{type(model).__name__} built on {device}")
    n_params = sum(p.numel() for p in model.parameters())
    n_emb = model.get_input_embeddings().weight.numel()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    batches = random_batches(config.vocab_size, batch_size, seq_len)

    def step(i: int) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    enabled = gc.isenabled()
    gc.disable()  # as in flame's loop (torchtitan's GarbageCollection)
    try:
        result = timed_steps(step, warmup, steps, device, profile)
    finally:
        if enabled:
            gc.enable()
    model = opt = None  # free them before the caller's next run
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**result, "n_params": n_params, "n_emb": n_emb, "fla_version": fla.__version__, "fla_file": fla.__file__}


# ----------------------------------------------------------------------------- flame and fla 0.6.0 (main process)


def flame_run(config_path: str, args, dump_folder: str) -> dict:
    """The real flame training step on a Trainer built in this process; timing + ``flops_per_token``."""
    from flame.config import FlameConfigManager
    from flame.model import count_params
    from flame.parallelize import uses_fsdp
    from flame.train import Trainer, shutdown_distributed

    total = args.warmup + args.steps
    cli = [
        "--model.config", config_path,
        "--job.dump_folder", dump_folder,
        "--training.batch_size", str(args.batch_size),
        "--training.seq_len", str(args.seq_len),
        # beyond the timed (and profiled) steps: no metrics log in them, the LR schedule never runs out
        "--training.steps", str(total + PROFILE_STEPS + 1),
        "--training.compile", "true" if args.compile else "false",
        "--training.mixed_precision_param", "bfloat16",
        "--activation_checkpoint.mode", args.ac,
        "--optimizer.implementation", "fused" if _device().type == "cuda" else "foreach",
        "--optimizer.lr", "1e-4",
        "--lr_scheduler.warmup_steps", "1",
        "--metrics.log_freq", str(10**9),
        "--metrics.enable_jsonl", "false",
        "--data.dataset", "synthetic",
    ]  # fmt: skip
    for item in args.set:  # validated by parse_args: section.key=value
        key, value = item.split("=", 1)
        cli += [f"--{key}", value]
    job = FlameConfigManager().parse_args(cli, world_size=1)
    batches = random_batches(_config_vocab(config_path), args.batch_size, args.seq_len)

    def synthetic(job, dp_rank: int, dp_world: int):
        return (batches[i % len(batches)] for i in range(10**9))

    trainer = Trainer(job, dataloader_fn=synthetic)
    try:
        n_params, n_emb = count_params(trainer.model)
        data = iter(trainer.dataloader)

        def step(i: int) -> None:
            trainer.step = i + 1
            trainer.train_step(data)

        result = timed_steps(step, args.warmup, args.steps, trainer.device, _profile_prefix(args, config_path, "flame"))
        amp = isinstance(trainer.autocast, torch.autocast)
        wrapper = "FSDP" if uses_fsdp(trainer.parallel_dims, job) else "plain, autocast" if amp else "plain"
        result.update(n_params=n_params, n_emb=n_emb, flops_per_token=trainer.flops_per_token, wrapper=wrapper)
    finally:
        trainer.close()
        trainer = None  # free the model and optimizer while the process group still exists
        gc.collect()
        shutdown_distributed(wait_for_all=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def fla_worker_run(fla_path: str, config_path: str, args) -> dict:
    """:func:`eager_run` in a subprocess that imports ``fla`` from ``fla_path`` (run outside the repository)."""
    fla_path = os.path.abspath(fla_path)
    # offline: the GPU machine has no network, and a hub lookup there waits for its timeouts
    env = {**os.environ, "PYTHONPATH": fla_path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "eager", "--config", os.path.abspath(config_path),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--dtype", args.dtype]  # fmt: skip
    prefix = _profile_prefix(args, config_path, "fla_peer")
    if prefix:
        cmd += ["--profile", os.path.abspath(prefix)]
    with tempfile.TemporaryDirectory() as cwd:  # its stderr streams through: autotuning there takes minutes
        done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fla worker failed ({done.returncode}); its stderr is above")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not os.path.abspath(result["fla_file"]).startswith(fla_path + os.sep):
        raise RuntimeError(f"the fla worker imported fla from {result['fla_file']}, not from --fla-path {fla_path}")
    return result


def _profile_prefix(args, config_path: str, impl: str) -> str | None:
    return os.path.join(args.profile, f"{Path(config_path).stem}_{impl}") if args.profile else None


def _config_vocab(config_path: str) -> int:
    path = Path(config_path)
    return json.loads((path / "config.json" if path.is_dir() else path).read_text())["vocab_size"]


def to_row(name: str, impl: str, result: dict, flops_per_token: float, args) -> dict:
    """One table row from a run's timing (tokens/s from the summed time of the timed steps)."""
    tok_s = args.batch_size * args.seq_len * args.steps / result["total_s"]
    tflops = flops_per_token * tok_s / 1e12
    mfu = 100.0 * tflops / args.peak_tflops if args.peak_tflops else None
    return {
        "model": name,
        "impl": impl,
        "params_M": round(result["n_params"] / 1e6, 1),
        "tok_s": round(tok_s),
        "step_ms": round(1e3 * result["step_s"], 1),
        "peak_active_gib": round(result["peak_active_gib"], 2),
        "peak_reserved_gib": round(result["peak_reserved_gib"], 2),
        "tflops": float(f"{tflops:.3g}"),
        "mfu_pct": float(f"{mfu:.3g}") if mfu is not None else "-",
    }


def rows_for(config_path: str, args) -> Iterator[dict]:
    """The rows of one config for every implementation asked for, each as soon as it is measured."""
    from transformers import AutoConfig

    import fla  # noqa: F401 - registers fla's model types
    from flame.metrics import flops_per_token

    config = AutoConfig.from_pretrained(config_path)
    name = Path(config_path).stem
    bf16 = args.dtype == "bfloat16"
    for impl in args.impl:
        if impl == "flame":
            with tempfile.TemporaryDirectory() as dump:
                r = flame_run(config_path, args, dump)
            extras = (["compile"] if args.compile else []) + ([f"AC {args.ac}"] if args.ac != "none" else [])
            extras += args.set
            yield to_row(name, f"flame ({', '.join([r['wrapper'], *extras])})", r, r["flops_per_token"], args)
        elif impl == "eager":
            prefix = _profile_prefix(args, config_path, "eager")
            r = eager_run(config_path, args.batch_size, args.seq_len, args.warmup, args.steps, bf16, prefix)
            fpt = flops_per_token(config, r["n_params"], r["n_emb"], args.seq_len)
            yield to_row(name, "eager HF loop", r, fpt, args)
    if args.fla_path:
        r = fla_worker_run(args.fla_path, config_path, args)
        fpt = flops_per_token(config, r["n_params"], r["n_emb"], args.seq_len)
        yield to_row(name, f"fla {r['fla_version']} eager", r, fpt, args)


def to_markdown(rows: list[dict], args, command: str) -> str:
    """The table with a header naming the device, the versions and the command."""
    import transformers
    import triton

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    peak = f"{args.peak_tflops:g} TFLOP/s" if args.peak_tflops else "none (no MFU)"
    head = (
        f"device: {dev} | torch {torch.__version__} | triton {triton.__version__} | transformers "
        f"{transformers.__version__} | python {platform.python_version()}\n\n"
        f"batch {args.batch_size} x {args.seq_len} tokens, {args.dtype}; {args.steps} timed steps after "
        f"{args.warmup} warm-up steps; step_ms: median; tok_s: tokens / summed step time; peak memory of the timed "
        f"steps (CUDA allocator; CPU: process peak RSS); MFU against {peak}\n\n"
        f"command: `{command}`\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="HF model config .json file(s)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--impl", default="flame,eager", help="comma-separated: flame, eager; none: only --fla-path")
    parser.add_argument("--compile", action="store_true", help="flame: torch.compile each block")
    parser.add_argument("--ac", choices=["none", "full", "selective"], default="none", help="flame: activation ckpt")
    set_help = "flame: a JobConfig override, e.g. model.overrides=fuse_linear_cross_entropy=true"
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=set_help)
    parser.add_argument("--fla-path", default=None, help="folder holding fla 0.6.0 (pip install --target)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                        help="compute dtype (default bfloat16 on CUDA; CPU always float32)")  # fmt: skip
    peak_help = f"MFU peak (default {DEFAULT_PEAK_TFLOPS:g} on CUDA; 794: H200 measured matmul)"
    parser.add_argument("--peak-tflops", type=float, default=None, help=peak_help)
    parser.add_argument(
        "--profile",
        default=None,
        help=f"folder: profile {PROFILE_STEPS} more steps per run after the timed ones (trace + kernel table)",
    )
    parser.add_argument("--out", default=None, help="write the markdown table here")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", choices=["eager"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if not cuda:
        args.dtype = "float32"  # flame keeps float32 parameters on CPU; the eager loop matches it
    if args.peak_tflops is None and cuda:
        args.peak_tflops = DEFAULT_PEAK_TFLOPS
    args.impl = [i.strip() for i in args.impl.split(",") if i.strip() and i.strip() != "none"]
    unknown = set(args.impl) - {"flame", "eager"}
    if unknown:
        parser.error(f"--impl: unknown {sorted(unknown)} (choose from flame, eager, none)")
    if not args.impl and not args.fla_path:
        parser.error("--impl none measures nothing without --fla-path")
    for key in ("batch_size", "seq_len", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step compiles, autotunes and logs metrics)")
    for item in args.set:
        key = item.split("=", 1)[0]
        if "=" not in item or key.count(".") != 1 or not all(key.split(".")):
            parser.error(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. training.compile=true")
    if args.fla_path and not (Path(args.fla_path) / "fla" / "__init__.py").is_file():
        parser.error(f"--fla-path {args.fla_path} holds no fla package (pip install --target it first)")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; prints (and with ``--out`` writes) the table; returns the rows."""
    args = parse_args(argv)
    if args.worker == "eager":
        # where a slow or stuck worker is: every thread's stack on stderr every 60 s
        faulthandler.dump_traceback_later(60, repeat=True, file=sys.stderr)
        result = eager_run(args.config[0], args.batch_size, args.seq_len, args.warmup, args.steps,
                           args.dtype == "bfloat16", args.profile)  # fmt: skip
        print(json.dumps(result))
        return []
    sys.path.insert(0, str(ROOT))  # `python benchmarks/train_throughput.py` from anywhere
    argv = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/train_throughput.py " + " ".join(argv)
    rows = []
    for config in args.config:
        for row in rows_for(config, args):
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(rows, args, command)  # after every row: a run cut short keeps what it measured
    print(to_markdown(rows, args, command))
    return rows


def _write(rows: list[dict], args, command: str) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(to_markdown(rows, args, command))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
