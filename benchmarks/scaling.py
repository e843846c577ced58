r"""Multi-GPU scaling sweep through the real trainer: tokens/s per GPU, MFU, peak memory, scaling efficiency.

    python -m benchmarks.scaling --model configs/gla_1.3B.json configs/transformer_1.3B.json \
        --layouts 1:fsdp 2:fsdp 8:fsdp 8:hsdp2 8:tp2 --steps 30 --warmup 10 --batch-size 8 --seq-len 2048 \
        [--compile] [--ac none|full|selective] [--resume-check 8:fsdp] [--append] \
        [--budget 540] --out $OUT/scaling.md [--extra --section.key value ...]

A layout ``N:kind`` is N processes on this node: ``fsdp`` (FSDP over all N), ``hsdpR`` (R replicas
x FSDP over N/R) or ``tpT`` (tensor parallel T x FSDP over N/T). Every (model, layout) is one
``python -m torch.distributed.run --standalone -m flame.train`` launch (what ``train.sh`` runs, minus
the HF export) with a fresh dump folder, on the offline sample corpus (``data/sample``, written by
``python -m flame.tools.sample_data`` when missing), bf16 mixed precision on CUDA, checkpoints off and one
metrics line per step (``<dump>/metrics.jsonl``). Per run the table has the median over the steps
after ``--warmup`` of tokens/s per device, step time, MFU and data-wait %, the largest per-step peak
reserved memory (rank 0), and the scaling efficiency: tokens/s per device over that of the
1-process run of the same model. A failed run (exit code, OOM, ``--run-timeout``) gets its error's
last line in the table and the sweep goes on; a timed-out run's whole process tree is killed.

``--resume-check LAYOUT`` (per model): deterministic mode (``--no-resume-deterministic``: off),
checkpoints every ``--resume-interval`` steps. Run A trains ``--resume-steps`` steps uninterrupted;
run B, the same command in another folder, is SIGKILLed (torchrun and every rank's process group)
once its metrics show step ``interval + 1``, then relaunched; B's per-step losses after the resume
must equal A's exactly.

The markdown (``--out``) and its rows as JSON (``--out`` with ``.json``) are rewritten after every
run, so a time limit still leaves the finished rows. ``--append`` first loads the rows of an existing
JSON (a sweep split over several commands; rows of the same model and layout are replaced).
``--budget S`` bounds the whole sweep: a launch gets at most the time left, none starts with less
than 20 s left (its row says skipped). SIGTERM (``timeout``) kills the running launch's process tree
before the sweep exits: torchrun's ranks run in sessions of their own and would outlive it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from flame.process_tree import kill_tree

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
POLL_S = 0.02
MIN_LAUNCH_S = 20.0  # with --budget: a launch needs at least this much of it left to start
# The environment of the sweep's own launcher that must not leak into a child torchrun.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
# Errors that other ranks report when one rank died first: the first rank's own error is more telling.
SECONDARY_ERROR = re.compile(r"DistBackendError|ChildFailedError|SignalException|Connection (reset|closed)|Broken pipe")
ERROR_LINE = re.compile(r"^(?:[\w.]*(?:Error|Exception|Interrupt)\b.*|flame: (?:config error|stopped): .*)$")
TEE_PREFIX = re.compile(r"^\[[\w-]*\d*\]:")


# ----------------------------------------------------------------------------- layouts


@dataclasses.dataclass(frozen=True)
class Layout:
    """``nproc`` processes as ``replicate x shard x tp`` (``replicate * shard * tp == nproc``)."""

    nproc: int
    replicate: int = 1
    tp: int = 1

    @property
    def shard(self) -> int:
        return self.nproc // (self.replicate * self.tp)

    @property
    def name(self) -> str:
        """The ``N:kind`` spelling :func:`parse_layout` reads."""
        kind = f"hsdp{self.replicate}" if self.replicate > 1 else f"tp{self.tp}" if self.tp > 1 else "fsdp"
        return f"{self.nproc}:{kind}"

    @property
    def description(self) -> str:
        if self.replicate > 1:
            return f"HSDP {self.replicate} x {self.shard}"
        if self.tp > 1:
            return f"TP {self.tp} x FSDP {self.shard}"
        return f"FSDP {self.nproc}"

    def train_args(self) -> list[str]:
        """The trainer's ``--parallelism.*`` arguments of this layout."""
        return [
            "--parallelism.data_parallel_replicate_degree", str(self.replicate),
            "--parallelism.data_parallel_shard_degree", str(self.shard),
            "--parallelism.tensor_parallel_degree", str(self.tp),
        ]  # fmt: skip


def parse_layout(text: str) -> Layout:
    """``"8:fsdp"``, ``"8:hsdp2"`` or ``"8:tp2"`` as a :class:`Layout`; ``ValueError`` naming the layout and why."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*([a-z]+)(\d*)\s*", text)
    if not m:
        raise ValueError(f"layout {text!r}: expected N:fsdp, N:hsdpR or N:tpT (e.g. 8:fsdp, 8:hsdp2, 8:tp2)")
    nproc, kind, degree = int(m.group(1)), m.group(2), m.group(3)
    if nproc < 1:
        raise ValueError(f"layout {text!r}: the process count must be >= 1")
    if kind == "fsdp":
        if degree:
            raise ValueError(f"layout {text!r}: fsdp takes no degree (it shards over all {nproc} processes)")
        return Layout(nproc)
    if kind not in ("hsdp", "tp"):
        raise ValueError(f"layout {text!r}: unknown kind {kind!r}; expected fsdp, hsdpR or tpT")
    what = "replicate" if kind == "hsdp" else "tensor parallel"
    if not degree:
        raise ValueError(f"layout {text!r}: {kind} needs its {what} degree, e.g. {nproc}:{kind}2")
    d = int(degree)
    if d < 2:
        raise ValueError(f"layout {text!r}: the {what} degree must be >= 2 ({nproc}:fsdp is degree 1)")
    if nproc % d:
        raise ValueError(f"layout {text!r}: the {what} degree {d} does not divide {nproc} processes")
    return Layout(nproc, replicate=d) if kind == "hsdp" else Layout(nproc, tp=d)


def _layout_arg(text: str) -> Layout:
    try:
        return parse_layout(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------- processes


@dataclasses.dataclass
class Outcome:
    """How a launch ended: ``rc`` (None when killed), ``timed_out``, ``killed`` (by ``stop_when``), seconds."""

    rc: int | None
    timed_out: bool = False
    killed: bool = False
    wall_s: float = 0.0


def run_launch(cmd: list[str], env: dict, log: Path, timeout_s: float, stop_when=None) -> Outcome:
    """Run ``cmd`` with stdout+stderr to ``log``; kill its process tree on timeout or once ``stop_when()`` is true."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout_s:
                    kill_tree(proc)
                    return Outcome(None, timed_out=True, wall_s=time.monotonic() - t0)
                if stop_when is not None and stop_when():
                    kill_tree(proc)
                    return Outcome(None, killed=True, wall_s=time.monotonic() - t0)
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # an exception (Ctrl-C) in the sweep: leave nothing running
                kill_tree(proc)
    return Outcome(proc.returncode, wall_s=time.monotonic() - t0)


def child_env() -> dict[str, str]:
    """The sweep's environment for a launch: this checkout first on PYTHONPATH, no inherited rendezvous."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("TORCHELASTIC_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _lines(path: Path) -> list[str]:
    """The lines of a log without torch's ``[rank0]:`` prefixes (empty if the file is missing)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return [TEE_PREFIX.sub("", x).strip() for x in text.splitlines()]


def _rank_of(log: Path) -> int:
    """The local rank of torchrun's ``<log-dir>/<run>/attempt_<n>/<rank>/stderr.log``."""
    return int(log.parent.name) if log.parent.name.isdigit() else 1 << 30


def error_line(dump: Path, console: Path) -> str:
    """The most telling error line of a failed launch: the first rank's own exception, else the console's."""
    found = []
    for log in sorted((dump / "logs").glob("**/stderr.log"), key=_rank_of):
        errs = [x for x in _lines(log) if ERROR_LINE.match(x)]
        if errs:
            found.append(errs[-1])
    primary = [x for x in found if not SECONDARY_ERROR.search(x)]
    if primary or found:
        return (primary or found)[0]
    lines = _lines(console)
    errs = [x for x in lines if ERROR_LINE.match(x) and not SECONDARY_ERROR.search(x)]
    rest = [x for x in lines if x and not set(x) <= set("=-")]
    return errs[-1] if errs else rest[-1] if rest else "no output"


# ----------------------------------------------------------------------------- one run


def metric_rows(dump: Path) -> list[dict]:
    """The rows of ``<dump>/metrics.jsonl`` (a line cut by a kill is skipped)."""
    path = dump / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def summarize(rows: list[dict], warmup: int) -> dict:
    """Medians over the steps after ``warmup`` (peak memory: the largest); ``ValueError`` if none are left."""
    timed = [r for r in rows if r["step"] > warmup]
    if not timed:
        raise ValueError(f"no metrics after the {warmup} warmup steps ({len(rows)} steps logged)")

    def median(key: str) -> float | None:
        values = [r[key] for r in timed if key in r]
        return statistics.median(values) if values else None

    return {
        "tok_s_dev": median("throughput/tokens_per_sec_per_device"),
        "step_s": median("time/step_s"),
        "mfu_pct": median("throughput/mfu_pct"),
        "data_wait_pct": median("time/data_wait_pct"),
        "peak_gib": max(r.get("memory/peak_reserved_gib", 0.0) for r in timed),
        "loss_last": rows[-1].get("loss/avg"),
        "steps_timed": len(timed),
    }


def train_args(opts: argparse.Namespace, model: str, layout: Layout, steps: int, dump: Path) -> list[str]:
    """The trainer's arguments for one run (``--extra`` last, so it overrides)."""
    args = [
        "--job.dump_folder", str(dump),
        "--model.config", model,
        "--model.tokenizer_path", str(opts.data / "tokenizer"),
        "--data.dataset", str(opts.data / "data"),
        "--data.num_workers", str(opts.data_workers),
        "--training.batch_size", str(dp_batch(opts, layout)),
        "--training.seq_len", str(opts.seq_len),
        "--training.steps", str(steps),
        "--training.gradient_accumulation_steps", "1",
        "--training.mixed_precision_param", "bfloat16",
        "--optimizer.lr", "3e-4",
        "--optimizer.implementation", "fused" if opts.cuda else "foreach",
        "--lr_scheduler.warmup_steps", str(steps),
        "--activation_checkpoint.mode", opts.ac,
        "--metrics.log_freq", "1",
        "--checkpoint.enable", "false",
        *layout.train_args(),
    ]  # fmt: skip
    if opts.compile:
        args.append("--training.compile")
    return args + list(opts.extra)


def dp_batch(opts: argparse.Namespace, layout: Layout) -> int:
    """Sequences per data-parallel rank: ``--batch-size``, times the TP degree with ``--scale-tp-batch``."""
    return opts.batch_size * (layout.tp if opts.scale_tp_batch else 1)


def launch_cmd(layout: Layout, args: list[str], dump: Path) -> list[str]:
    """torchrun (standalone) over ``python -m flame.train``: rank 0 on the console, every rank in <dump>/logs."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(layout.nproc),
            "--log-dir", str(dump / "logs"), "--tee", "3", "--local-ranks-filter", "0",
            "-m", "flame.train", *args]  # fmt: skip


def launch_timeout(opts: argparse.Namespace) -> float:
    """Seconds the next launch may take: ``--run-timeout``, or less where the sweep's ``--budget`` ends sooner."""
    if opts.budget is None:
        return opts.run_timeout
    return max(min(opts.run_timeout, opts.deadline - time.monotonic()), 0.0)


def timeout_reason(opts: argparse.Namespace, timeout: float) -> str:
    return "--run-timeout" if timeout >= opts.run_timeout else "the end of --budget"


def fresh(dump: Path) -> Path:
    if dump.exists():
        shutil.rmtree(dump)
    dump.mkdir(parents=True)
    return dump


def speed_run(opts: argparse.Namespace, model: str, layout: Layout) -> dict:
    """One launch of ``model`` on ``layout`` for ``--steps`` steps: its table row."""
    row = {"kind": "speed", "model": Path(model).stem, "layout": layout.name, "description": layout.description,
           "gpus": layout.nproc, "global_batch": dp_batch(opts, layout) * layout.replicate * layout.shard}  # fmt: skip
    if opts.cuda and layout.nproc > opts.gpus:
        return {**row, "status": "skipped", "error": f"needs {layout.nproc} GPUs, {opts.gpus} visible"}
    dump = fresh(opts.work_dir / f"{row['model']}_{layout.name.replace(':', '_')}")
    cmd = launch_cmd(layout, train_args(opts, model, layout, opts.steps, dump), dump)
    row["command"] = shlex.join(cmd)
    timeout = launch_timeout(opts)
    out = run_launch(cmd, child_env(), dump / "console.log", timeout)
    row["wall_s"] = round(out.wall_s, 1)
    if out.timed_out:
        return {**row, "status": "timeout", "error": f"killed after {timeout:.0f} s ({timeout_reason(opts, timeout)})"}
    if out.rc != 0:
        return {**row, "status": "failed", "error": f"exit {out.rc}: {error_line(dump, dump / 'console.log')}"}
    try:
        return {**row, "status": "ok", **summarize(metric_rows(dump), opts.warmup)}
    except ValueError as err:
        return {**row, "status": "failed", "error": str(err)}


# ----------------------------------------------------------------------------- kill + resume


def losses(dump: Path) -> dict[int, float]:
    """Loss per step, the last logged value winning (a relaunch logs the replayed steps again)."""
    return {r["step"]: r["loss/avg"] for r in metric_rows(dump) if "loss/avg" in r}


def complete_checkpoints(folder: Path) -> list[int]:
    """Steps of the complete (``.metadata`` written) ``step-N`` checkpoints in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in folder.glob("step-*") if p.name[5:].isdigit() and (p / ".metadata").exists())


def resume_check(opts: argparse.Namespace, model: str, layout: Layout) -> dict:
    """A uninterrupted; B SIGKILLed after step interval + 1 and relaunched; B's losses against A's."""
    steps, interval = opts.resume_steps, opts.resume_interval
    row = {"kind": "resume", "model": Path(model).stem, "layout": layout.name, "description": layout.description,
           "gpus": layout.nproc, "steps": steps, "interval": interval}  # fmt: skip
    if opts.cuda and layout.nproc > opts.gpus:
        return {**row, "status": "skipped", "error": f"needs {layout.nproc} GPUs, {opts.gpus} visible"}
    base = opts.work_dir / f"{row['model']}_{layout.name.replace(':', '_')}_resume"
    row["deterministic"] = opts.resume_deterministic
    extra = ["--training.deterministic", str(opts.resume_deterministic).lower(), "--checkpoint.enable", "true",
             "--checkpoint.interval", str(interval), "--checkpoint.keep_latest_k", "2"]  # fmt: skip
    env = child_env()

    def launch(dump: Path, log: str, stop_when=None) -> tuple[list[str], Outcome]:
        cmd = launch_cmd(layout, train_args(opts, model, layout, steps, dump) + extra, dump)
        return cmd, run_launch(cmd, env, dump / log, launch_timeout(opts), stop_when)

    def failed(what: str, dump: Path, log: str, out: Outcome) -> dict:
        why = "timed out" if out.timed_out else f"exit {out.rc}: {error_line(dump, dump / log)}"
        return {**row, "status": "failed", "error": f"{what}: {why}"}

    a, b = fresh(base / "A"), fresh(base / "B")
    t0 = time.monotonic()
    try:
        cmd, out = launch(a, "console.log")
        row["command"] = shlex.join(cmd)
        if out.rc != 0:
            return failed("run A", a, "console.log", out)
        ref = losses(a)
        shutil.rmtree(a / "checkpoint", ignore_errors=True)

        _, out = launch(b, "console.log", stop_when=lambda: any(s > interval for s in losses(b)))
        if not out.killed:
            if out.rc == 0:
                return {**row, "status": "failed", "error": "run B finished before it was killed: raise --resume-steps"}
            return failed("run B", b, "console.log", out)
        row["killed_after_step"] = max(losses(b), default=0)
        saved = complete_checkpoints(b / "checkpoint")
        row["resumed_from"] = max(saved, default=0)
        if not saved:
            return {**row, "status": "failed", "error": "no complete checkpoint when run B was killed"}

        _, out = launch(b, "console_relaunch.log")
        if out.rc != 0:
            return failed("relaunch of B", b, "console_relaunch.log", out)
        text = (b / "console_relaunch.log").read_text(errors="replace")
        loaded = re.search(r"Loading the checkpoint \S*step-(\d+)", text)
        if not loaded or int(loaded.group(1)) != row["resumed_from"]:
            return {**row, "status": "failed", "error": f"the relaunch did not load step-{row['resumed_from']}"}
    finally:
        row["wall_s"] = round(time.monotonic() - t0, 1)
        if not opts.keep_checkpoints:
            for d in (a, b):
                shutil.rmtree(d / "checkpoint", ignore_errors=True)

    got = losses(b)
    after = list(range(row["resumed_from"] + 1, steps + 1))
    missing = [s for s in range(1, steps + 1) if s not in got or s not in ref]
    if missing:
        return {**row, "status": "failed", "error": f"steps without a loss in A or B: {missing}"}
    diffs = [abs(got[s] - ref[s]) for s in after]
    row.update(
        compared_steps=f"{after[0]}-{after[-1]}" if after else "-",
        max_abs_diff=max(diffs, default=0.0),
        max_abs_diff_all=max(abs(got[s] - ref[s]) for s in range(1, steps + 1)),
        loss_last=got[steps],
    )
    row["exact"] = bool(after) and row["max_abs_diff_all"] == 0.0
    row["status"] = (
        "ok" if row["exact"] else "mismatch" if opts.resume_deterministic else "not exact (non-deterministic)"
    )
    return row


# ----------------------------------------------------------------------------- report


def with_efficiency(rows: list[dict]) -> list[dict]:
    """Speed rows with ``efficiency``: tokens/s per device over the same model's 1-process run (None if none)."""
    base = {r["model"]: r["tok_s_dev"] for r in rows if r["kind"] == "speed" and r["status"] == "ok" and r["gpus"] == 1}
    out = []
    for r in rows:
        r = dict(r)
        if r["kind"] == "speed" and r["status"] == "ok" and base.get(r["model"]):
            r["efficiency"] = r["tok_s_dev"] / base[r["model"]]
        out.append(r)
    return out


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _cell(text: str, limit: int = 160) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


SPEED_NOTE = (
    "tok/s/GPU, step s, MFU and data wait: medians over the steps after the warmup; peak: the largest per-step "
    "peak reserved memory of rank 0; efficiency: tok/s/GPU over the 1-process run of that model; global batch: "
    "sequences per step (the batch is per data-parallel rank: a TP group shares one, see --scale-tp-batch)."
)
RESUME_NOTE = (
    "Kill + auto-resume: run A uninterrupted; run B SIGKILLed (torchrun and every rank) after step interval + 1 "
    "and relaunched with the same command; B's losses after the resume against A's (exact: every step equal)."
)


def _speed_line(r: dict) -> str:
    status = "ok" if r["status"] == "ok" else f"{r['status']}: {_cell(r.get('error', ''))}"
    eff = _fmt(100 * r["efficiency"], ".1f") + " %" if r.get("efficiency") is not None else "-"
    return (
        f"| {r['model']} | {r['layout']} ({r['description']}) | {r['gpus']} | {r.get('global_batch', '-')} "
        f"| {_fmt(r.get('tok_s_dev'), ',.0f')} "
        f"| {_fmt(r.get('step_s'), '.3f')} | {_fmt(r.get('mfu_pct'), '.1f')} | {_fmt(r.get('peak_gib'), '.2f')} "
        f"| {_fmt(r.get('data_wait_pct'), '.1f')} | {eff} | {_fmt(r.get('loss_last'), '.4f')} | {status} |"
    )


def _resume_line(r: dict) -> str:
    status = f"{r['status']}: {_cell(r['error'])}" if r.get("error") else r["status"]
    exact = "-" if "exact" not in r else "yes" if r["exact"] else "no"
    det = {True: "yes", False: "no"}.get(r.get("deterministic"), "-")
    return (
        f"| {r['model']} | {r['layout']} ({r['description']}) | {r['steps']} | {r['interval']} | {det} "
        f"| {r.get('killed_after_step', '-')} | {r.get('resumed_from', '-')} | {r.get('compared_steps', '-')} "
        f"| {_fmt(r.get('max_abs_diff'), '.3g')} | {exact} | {status} |"
    )


def render(rows: list[dict], header: dict) -> str:
    """The markdown report: header lines, the speed table, the resume table, the launch commands."""
    lines = ["# Scaling through the flame trainer", ""]
    lines += [f"- {k}: {_cell(v, 2000)}" for k, v in header.items()]
    speeds = [r for r in with_efficiency(rows) if r["kind"] == "speed"]
    if speeds:
        lines += ["", SPEED_NOTE, "", "| model | layout | GPUs | global batch | tok/s/GPU | step s | MFU % | peak GiB "
                  "| data wait % | efficiency | last loss | status |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [_speed_line(r) for r in speeds]
    resumes = [r for r in rows if r["kind"] == "resume"]
    if resumes:
        lines += ["", RESUME_NOTE, "", "| model | layout | steps | interval | deterministic | killed after step "
                  "| resumed from | compared steps | max abs diff | exact | status |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [_resume_line(r) for r in resumes]
    commands = [r for r in rows if r.get("command")]
    if commands:
        lines += ["", "<details><summary>launch commands</summary>", ""]
        lines += [f"- {r['model']} {r['layout']} ({r['kind']}): `{r['command']}`" for r in commands]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def environment(opts: argparse.Namespace) -> dict:
    """Device, versions, command and date for the report header."""
    import torch

    versions = [f"torch {torch.__version__}"]
    for name in ("triton", "transformers"):
        with contextlib.suppress(Exception):
            versions.append(f"{name} {__import__(name).__version__}")
    versions.append(f"python {platform.python_version()}")
    if opts.cuda:
        device = f"{opts.gpus} x CUDA GPU"
        with contextlib.suppress(Exception):  # nvidia-smi: no CUDA context in this process
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=30).stdout.split("\n")  # fmt: skip
            device = f"{opts.gpus} x {names[0].strip()}"
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores visible), gloo"
    commit = "-"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "-"  # fmt: skip
    return {
        "device": device,
        "versions": ", ".join(versions),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "settings": f"batch {opts.batch_size} x seq {opts.seq_len} per data-parallel rank"
        f"{' (x T with TP T)' if opts.scale_tp_batch else ''}, {opts.steps} steps "
        f"({opts.warmup} warmup), compile {'on' if opts.compile else 'off'}, AC {opts.ac}, "
        f"{'bf16 params / fp32 reduce' if opts.cuda else 'fp32 (CPU)'}, data {opts.data} "
        f"({opts.data_workers} loader workers per rank)",
        "command": shlex.join(["python", "-m", "benchmarks.scaling", *opts.argv]),
    }


def write_report(opts: argparse.Namespace, rows: list[dict], header: dict) -> None:
    """Rewrite ``--out`` (markdown) and its ``.json`` (header + rows)."""
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(render(rows, header))
    opts.json.write_text(json.dumps({"header": header, "rows": with_efficiency(rows)}, indent=1) + "\n")


def _replace(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` instead of the one of the same kind, model and layout (kept over a skipped ``row``)."""
    same = (row["kind"], row["model"], row["layout"])
    if row["status"] == "skipped" and any((r["kind"], r["model"], r["layout"]) == same for r in rows):
        return rows
    return [r for r in rows if (r["kind"], r["model"], r["layout"]) != same] + [row]


def _progress(row: dict) -> str:
    if row.get("error") or row["status"] == "skipped":
        return f"{row['status']}: {row.get('error', '')}"
    if row["kind"] == "resume":
        return (f"{row['status']}: resumed from step {row['resumed_from']}, steps {row['compared_steps']}, "
                f"max abs loss diff {row['max_abs_diff']:.3g}")  # fmt: skip
    mfu = f", MFU {row['mfu_pct']:.1f}%" if row.get("mfu_pct") is not None else ""
    return (f"{row['tok_s_dev']:,.0f} tok/s/GPU, {row['step_s']:.3f} s/step{mfu}, peak {row['peak_gib']:.2f} GiB "
            f"({row['wall_s']:.0f} s)")  # fmt: skip


# ----------------------------------------------------------------------------- main


def ensure_sample_data(data: Path) -> None:
    """Write the offline sample corpus + tokenizer to ``data`` when missing."""
    if (data / "data").is_dir() and (data / "tokenizer").is_dir():
        return
    print(f"scaling: writing the sample corpus to {data}", flush=True)
    subprocess.run([sys.executable, "-m", "flame.tools.sample_data", "--out", str(data)], cwd=ROOT, check=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The sweep's options (everything after ``--extra`` goes to the trainer verbatim)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--extra" in argv:
        i = argv.index("--extra")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True, help="HF model config .json file(s)")
    p.add_argument("--layouts", nargs="+", type=_layout_arg, default=[], help="N:fsdp, N:hsdpR, N:tpT")
    p.add_argument("--steps", type=int, default=30, help="steps per speed run")
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the medians")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per data-parallel rank")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument(
        "--scale-tp-batch",
        action="store_true",
        help="tpT layouts: T x --batch-size per data-parallel rank (the same tokens per GPU as FSDP)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile each block (--training.compile)")
    p.add_argument("--ac", choices=["none", "full", "selective"], default="none", help="activation checkpointing")
    p.add_argument("--data", type=Path, default=SAMPLE, help="sample corpus (data/, tokenizer/); made if missing")
    p.add_argument("--data-workers", type=int, default=None, help="loader workers per rank (default: 2 CUDA, 0 CPU)")
    p.add_argument("--run-timeout", type=float, default=300.0, help="seconds per launch before it is killed")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole sweep: later runs are skipped")
    p.add_argument("--resume-check", type=_layout_arg, default=None, metavar="LAYOUT", help="kill + resume check on it")
    p.add_argument("--resume-steps", type=int, default=12, help="steps of the resume check runs")
    p.add_argument("--resume-interval", type=int, default=4, help="checkpoint interval of the resume check")
    p.add_argument(
        "--resume-deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--training.deterministic in the resume check (default on: losses must match exactly)",
    )
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the resume check's checkpoints")
    p.add_argument("--out", type=Path, required=True, help="markdown report (its rows also go to the .json beside)")
    p.add_argument("--work-dir", type=Path, default=None, help="dump folders (default: <out dir>/scaling_runs)")
    p.add_argument("--append", action="store_true", help="keep the rows of an existing <out>.json")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="trainer arguments appended to every launch")
    opts = p.parse_args(argv)
    opts.extra, opts.argv = extra, [*argv, *(["--extra", *extra] if extra else [])]
    if opts.steps <= opts.warmup:
        p.error(f"--steps {opts.steps} must be larger than --warmup {opts.warmup}")
    if opts.resume_interval < 1 or opts.resume_steps < opts.resume_interval + 2:
        p.error(f"--resume-steps {opts.resume_steps} must be >= --resume-interval {opts.resume_interval} + 2 (>= 1)")
    if not opts.layouts and opts.resume_check is None:
        p.error("nothing to run: give --layouts and/or --resume-check")
    for model in opts.model:
        if not Path(model).is_file():
            p.error(f"--model {model}: no such file")
    opts.model = [str(Path(m).resolve()) for m in opts.model]
    opts.out, opts.data = opts.out.resolve(), opts.data.resolve()
    opts.json = opts.out.with_suffix(".json")
    opts.work_dir = (opts.work_dir or opts.out.parent / "scaling_runs").resolve()

    import torch

    opts.cuda = torch.cuda.is_available()
    opts.gpus = torch.cuda.device_count() if opts.cuda else 0
    if opts.data_workers is None:
        opts.data_workers = 2 if opts.cuda else 0
    return opts


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through run_launch, which kills the running launch's processes


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the sweep; return its rows (also written to ``--out`` and its .json after every run).

    SIGTERM (``timeout``, a job scheduler) ends the sweep like Ctrl-C: the running launch's whole
    process tree is killed first (torchrun's ranks run in sessions of their own and would survive).
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return sweep(parse_args(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep(opts: argparse.Namespace) -> list[dict]:
    """Every speed run, then the resume checks, writing the report after each."""
    opts.deadline = time.monotonic() + (opts.budget or 0.0)
    ensure_sample_data(opts.data)
    header = environment(opts)
    rows = []
    if opts.append and opts.json.exists():  # an earlier part of the sweep: keep its rows and name its command
        saved = json.loads(opts.json.read_text())
        rows = saved["rows"]
        if saved["header"].get("command") not in (None, header["command"]):
            header["command"] = f"{saved['header']['command']} ; {header['command']}"
    rows = [{k: v for k, v in r.items() if k != "efficiency"} for r in rows]
    plan = [("speed", m, lay) for m in opts.model for lay in opts.layouts]
    plan += [("resume", m, opts.resume_check) for m in opts.model if opts.resume_check is not None]
    print(f"scaling: {len(plan)} launch set(s) on {header['device']}; report in {opts.out}", flush=True)
    for i, (kind, model, layout) in enumerate(plan, 1):
        what = f"{kind} {Path(model).stem} {layout.name}"
        if opts.budget is not None and launch_timeout(opts) < MIN_LAUNCH_S:
            row = {"kind": kind, "model": Path(model).stem, "layout": layout.name, "description": layout.description,
                   "gpus": layout.nproc, "steps": opts.resume_steps, "interval": opts.resume_interval,
                   "status": "skipped", "error": f"--budget {opts.budget:g} s spent"}  # fmt: skip
        else:
            print(f"scaling [{i}/{len(plan)}] {what} ({layout.description}) ...", flush=True)
            row = speed_run(opts, model, layout) if kind == "speed" else resume_check(opts, model, layout)
        rows = _replace(rows, row)
        write_report(opts, rows, header)
        print(f"scaling [{i}/{len(plan)}] {what}: {_progress(row)}", flush=True)
    return rows


if __name__ == "__main__":
    main()
