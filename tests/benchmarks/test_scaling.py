"""benchmarks/scaling.py: layout parsing, the report, failure rows, process-tree kills, and real CPU sweeps.

The real sweeps launch ``python -m flame.train`` under torchrun with gloo on the tiny Transformer++
(configs/transformer_cpu.json) and the sample corpus; the full one (FSDP, HSDP, TP and the
kill + resume check) is ``slow``, a short one with a failing model runs by default.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import scaling
from benchmarks.scaling import Layout, parse_layout
from flame.process_tree import alive, descendants
from flame.tools.sample_data import make_sample_data

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "transformer_cpu.json")


# ----------------------------------------------------------------------------- layouts and options


@pytest.mark.parametrize(
    "text, layout, args",
    [
        ("1:fsdp", Layout(1), (1, 1, 1)),
        ("8:fsdp", Layout(8), (1, 8, 1)),
        ("8:hsdp2", Layout(8, replicate=2), (2, 4, 1)),
        (" 4 : tp2 ", Layout(4, tp=2), (1, 2, 2)),
        ("8:tp4", Layout(8, tp=4), (1, 2, 4)),
    ],
)
def test_parse_layout(text, layout, args):
    got = parse_layout(text)
    assert got == layout and parse_layout(got.name) == got
    a = got.train_args()
    assert (int(a[1]), int(a[3]), int(a[5])) == args
    assert a[0::2] == ["--parallelism.data_parallel_replicate_degree", "--parallelism.data_parallel_shard_degree",
                       "--parallelism.tensor_parallel_degree"]  # fmt: skip
    assert args[0] * args[1] * args[2] == got.nproc


@pytest.mark.parametrize(
    "text, match",
    [
        ("8", r"layout '8': expected N:fsdp, N:hsdpR or N:tpT"),
        ("fsdp:8", r"expected N:fsdp"),
        ("8:ddp", r"layout '8:ddp': unknown kind 'ddp'; expected fsdp, hsdpR or tpT"),
        ("8:fsdp2", r"layout '8:fsdp2': fsdp takes no degree"),
        ("8:hsdp", r"layout '8:hsdp': hsdp needs its replicate degree, e.g. 8:hsdp2"),
        ("6:hsdp4", r"layout '6:hsdp4': the replicate degree 4 does not divide 6 processes"),
        ("6:tp4", r"layout '6:tp4': the tensor parallel degree 4 does not divide 6 processes"),
        ("4:tp1", r"layout '4:tp1': the tensor parallel degree must be >= 2"),
        ("0:fsdp", r"layout '0:fsdp': the process count must be >= 1"),
    ],
)
def test_bad_layouts(text, match):
    with pytest.raises(ValueError, match=match):
        parse_layout(text)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--layouts", "6:tp4"], r"argument --layouts: layout '6:tp4': the tensor parallel degree 4 does not divide"),
        (["--layouts", "1:fsdp", "--steps", "5", "--warmup", "5"], r"--steps 5 must be larger than --warmup 5"),
        (["--resume-check", "2:fsdp", "--resume-steps", "3", "--resume-interval", "2"], r"--resume-steps 3 must be"),
        ([], r"nothing to run"),
        (["--layouts", "1:fsdp", "--model", "configs/nope.json"], r"--model configs/nope.json: no such file"),
    ],
)
def test_bad_options(argv, match, capsys, tmp_path):
    with pytest.raises(SystemExit):
        scaling.parse_args(["--model", TINY, "--out", str(tmp_path / "s.md"), *argv])
    assert any(__import__("re").search(match, line) for line in capsys.readouterr().err.splitlines())


def test_options_map_to_trainer_args(tmp_path):
    opts = scaling.parse_args(["--model", TINY, "--layouts", "4:tp2", "--steps", "7", "--warmup", "2", "--compile",
                               "--out", str(tmp_path / "s.md"), "--extra", "--training.seed", "3"])  # fmt: skip
    assert opts.layouts == [Layout(4, tp=2)] and opts.json == tmp_path / "s.json"
    assert opts.work_dir == tmp_path / "scaling_runs" and opts.extra == ["--training.seed", "3"]
    args = scaling.train_args(opts, opts.model[0], opts.layouts[0], opts.steps, tmp_path / "d")
    pairs = dict(zip(args[:-3:2], args[1:-3:2]))  # the flag-value pairs before --training.compile + --extra
    assert pairs["--training.steps"] == "7" and pairs["--checkpoint.enable"] == "false"
    assert pairs["--metrics.log_freq"] == "1" and pairs["--parallelism.tensor_parallel_degree"] == "2"
    assert pairs["--parallelism.data_parallel_shard_degree"] == "2"
    assert args[-3:] == ["--training.compile", "--training.seed", "3"]  # --extra last: it overrides
    from flame.config import FlameConfigManager

    job = FlameConfigManager().parse_args(args, world_size=4)  # the trainer accepts every argument
    assert (job.parallelism.tensor_parallel_degree, job.training.seed, job.training.compile) == (2, 3, True)
    assert pairs["--training.batch_size"] == "8"  # per data-parallel rank: the TP pair shares it
    opts.scale_tp_batch = True
    args = scaling.train_args(opts, opts.model[0], opts.layouts[0], opts.steps, tmp_path / "d")
    assert args[args.index("--training.batch_size") + 1] == "16"  # the same tokens per GPU as FSDP
    cmd = scaling.launch_cmd(opts.layouts[0], args, tmp_path / "d")
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "--log-dir"]


# ----------------------------------------------------------------------------- metrics and the report


def metrics(step: int, tps: float, **extra) -> dict:
    return {"step": step, "loss/avg": 9.0 - step, "throughput/tokens_per_sec_per_device": tps, "time/step_s": 1 / tps,
            "time/data_wait_pct": 1.0, "memory/peak_reserved_gib": step * 0.5, **extra}  # fmt: skip


def test_summarize_medians_after_warmup():
    rows = [metrics(1, 10.0), metrics(2, 100.0), metrics(3, 300.0), metrics(4, 200.0)]
    got = scaling.summarize(rows, warmup=1)
    assert got["tok_s_dev"] == 200.0 and got["step_s"] == pytest.approx(1 / 200)
    assert got["peak_gib"] == 2.0 and got["loss_last"] == 5.0 and got["steps_timed"] == 3
    assert got["mfu_pct"] is None  # no MFU key (CPU): none
    assert scaling.summarize([metrics(s, 50.0, **{"throughput/mfu_pct": 40.0 + s}) for s in (1, 2, 3)], 0)[
        "mfu_pct"
    ] == pytest.approx(42.0)
    with pytest.raises(ValueError, match="no metrics after the 4 warmup steps"):
        scaling.summarize(rows, warmup=4)


def speed(model, layout, status="ok", **kw):
    lay = parse_layout(layout)
    return {"kind": "speed", "model": model, "layout": layout, "description": lay.description, "gpus": lay.nproc,
            "status": status, **kw}  # fmt: skip


def test_report_efficiency_failures_and_resume_rows():
    ok = dict(step_s=0.5, mfu_pct=None, data_wait_pct=0.5, peak_gib=3.25, loss_last=7.5)
    rows = [
        speed("gla", "1:fsdp", tok_s_dev=1000.0, **ok),
        speed("gla", "8:hsdp2", tok_s_dev=925.0, global_batch=64, **ok),
        speed("gla", "8:tp2", "failed", global_batch=32, error="exit 1: torch.OutOfMemoryError: oom | tried 2 GiB"),
        speed("tfm", "2:fsdp", tok_s_dev=500.0, **ok),  # no 1-process run of this model: no efficiency
        {"kind": "resume", "model": "gla", "layout": "8:fsdp", "description": "FSDP 8", "gpus": 8, "steps": 12,
         "interval": 4, "killed_after_step": 5, "resumed_from": 4, "compared_steps": "5-12", "max_abs_diff": 0.0,
         "exact": True, "deterministic": True, "status": "ok"},
    ]  # fmt: skip
    eff = {(r["model"], r["layout"]): r.get("efficiency") for r in scaling.with_efficiency(rows)}
    assert eff == {("gla", "1:fsdp"): 1.0, ("gla", "8:hsdp2"): 0.925, ("gla", "8:tp2"): None,
                   ("tfm", "2:fsdp"): None, ("gla", "8:fsdp"): None}  # fmt: skip
    text = scaling.render(rows, {"device": "8 x NVIDIA H200", "command": "python -m benchmarks.scaling ..."})
    lines = text.splitlines()
    assert "- device: 8 x NVIDIA H200" in lines
    assert "| gla | 8:hsdp2 (HSDP 2 x 4) | 8 | 64 | 925 | 0.500 | - | 3.25 | 0.5 | 92.5 % | 7.5000 | ok |" in lines
    assert (
        "| gla | 8:tp2 (TP 2 x FSDP 4) | 8 | 32 | - | - | - | - | - | - | - | failed: exit 1: "
        "torch.OutOfMemoryError: oom \\| tried 2 GiB |" in lines
    )
    assert "| tfm | 2:fsdp (FSDP 2) | 2 | - | 500 | 0.500 | - | 3.25 | 0.5 | - | 7.5000 | ok |" in lines
    assert "| gla | 8:fsdp (FSDP 8) | 12 | 4 | yes | 5 | 4 | 5-12 | 0 | yes | ok |" in lines
    assert all(line.count("|") - line.count("\\|") in (12, 13) for line in lines if line.startswith("| "))


def test_error_line_prefers_the_first_ranks_own_error(tmp_path):
    logs = tmp_path / "logs" / "run" / "attempt_0"
    for rank, last in ((0, "torch.distributed.DistBackendError: Connection closed by peer"),
                       (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")):  # fmt: skip
        (logs / str(rank)).mkdir(parents=True)
        (logs / str(rank) / "stderr.log").write_text(f"Traceback (most recent call last):\n  File x\n{last}\n")
    console = tmp_path / "console.log"
    console.write_text("[rank0]: boom\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n")
    assert scaling.error_line(tmp_path, console).startswith("torch.OutOfMemoryError: CUDA out of memory")
    other = tmp_path / "other"
    other.mkdir()
    console.write_text("[rank0]:flame: config error: command line: training.nope = 1: unknown key\nE1 done\n")
    assert scaling.error_line(other, console) == "flame: config error: command line: training.nope = 1: unknown key"
    console.write_text("just some output\nthe end\n\n")
    assert scaling.error_line(other, console) == "the end"


# ----------------------------------------------------------------------------- processes

# A stand-in for torchrun: two "ranks" in sessions of their own, their pids printed, then it waits.
FAKE_LAUNCHER = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        for _ in range(2)]
print("ranks", *[k.pid for k in kids], flush=True)
time.sleep(300)
"""


def fake_ranks(log: Path) -> list[int]:
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("ranks "):
            return [int(x) for x in line.split()[1:]]
    return []


@pytest.mark.parametrize("how", ["stop_when", "timeout"])
def test_run_launch_kills_the_whole_tree(tmp_path, how):
    log = tmp_path / "console.log"
    cmd = [sys.executable, "-c", FAKE_LAUNCHER]
    t0 = time.monotonic()
    if how == "stop_when":
        out = scaling.run_launch(cmd, scaling.child_env(), log, timeout_s=60, stop_when=lambda: bool(fake_ranks(log)))
        assert out.killed and not out.timed_out and out.rc is None
    else:
        out = scaling.run_launch(cmd, scaling.child_env(), log, timeout_s=3)
        assert out.timed_out and not out.killed and out.rc is None
    assert time.monotonic() - t0 < 30
    ranks = fake_ranks(log)
    assert len(ranks) == 2, log.read_text()
    assert not any(alive(pid) for pid in ranks), "a rank in its own session survived"


def test_run_launch_exit_code(tmp_path):
    out = scaling.run_launch([sys.executable, "-c", "raise SystemExit(3)"], scaling.child_env(), tmp_path / "l", 60)
    assert out.rc == 3 and not out.killed and not out.timed_out


# ----------------------------------------------------------------------------- real sweeps on CPU (gloo)


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("scaling")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    """A small offline corpus + tokenizer (as tests/flame's fixture makes it)."""
    out = tmp_path_factory.mktemp("sample")
    make_sample_data(out, num_docs=1200, vocab_size=512, seed=0, num_shards=4, valid_docs=50)
    return out


def sweep(tmp_path: Path, sample_dir: Path, models: list[str], *argv: str) -> tuple[list[dict], dict, str]:
    out = tmp_path / "report" / "scaling.md"
    rows = scaling.main(["--model", *models, "--steps", "4", "--warmup", "1", "--batch-size", "2", "--seq-len", "32",
                         "--data", str(sample_dir), "--run-timeout", "240", "--out", str(out), *argv])  # fmt: skip
    saved = json.loads(out.with_suffix(".json").read_text())
    return rows, saved, out.read_text()


def check_speed_row(row: dict) -> None:
    assert row["status"] == "ok", row
    for key in ("tok_s_dev", "step_s", "peak_gib", "loss_last", "data_wait_pct"):
        assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
    assert row["tok_s_dev"] > 0 and row["step_s"] > 0 and row["peak_gib"] > 0 and 0 < row["loss_last"] < 20
    assert row["steps_timed"] == 3


def test_failed_model_gets_an_error_row_and_the_sweep_goes_on(tmp_path, sample_dir):
    bad = tmp_path / "bad_model.json"
    bad.write_text(json.dumps({**json.loads(Path(TINY).read_text()), "hidden_act": "nope"}))  # fails its config check
    rows, saved, text = sweep(tmp_path, sample_dir, [str(bad), TINY], "--layouts", "1:fsdp")
    failed, ok = rows
    assert failed["status"] == "failed" and failed["error"].startswith("exit 1: "), failed
    assert "hidden_act='nope' is not one of" in failed["error"], failed["error"]
    check_speed_row(ok)
    assert [r["status"] for r in saved["rows"]] == ["failed", "ok"] and saved["rows"][1]["efficiency"] == 1.0
    assert "| bad_model | 1:fsdp (FSDP 1) | 1 | 2 | - |" in text and "| transformer_cpu | 1:fsdp (FSDP 1) | 1 |" in text
    assert "- device: CPU" in text and "- versions: torch " in text and "--layouts 1:fsdp" in text


@pytest.mark.slow
def test_full_sweep_with_resume_check(tmp_path, sample_dir):
    """FSDP 1 and 2, HSDP 2x1, TP 2, then kill + resume on FSDP 2 (6 steps, checkpoints every 2)."""
    rows, saved, text = sweep(tmp_path, sample_dir, [TINY], "--layouts", "1:fsdp", "2:fsdp", "2:hsdp2", "2:tp2",
                              "--resume-check", "2:fsdp", "--resume-steps", "6", "--resume-interval", "2")  # fmt: skip
    assert [(r["kind"], r["layout"]) for r in rows] == [
        ("speed", "1:fsdp"),
        ("speed", "2:fsdp"),
        ("speed", "2:hsdp2"),
        ("speed", "2:tp2"),
        ("resume", "2:fsdp"),
    ]
    for row in rows[:4]:
        check_speed_row(row)
    effs = [r["efficiency"] for r in saved["rows"][:4]]
    assert effs[0] == 1.0 and all(math.isfinite(e) and e > 0 for e in effs)
    resume = rows[4]
    assert resume["status"] == "ok" and resume["exact"] and resume["max_abs_diff"] == 0.0, resume
    assert resume["resumed_from"] in (2, 4) and resume["killed_after_step"] >= 3
    assert resume["compared_steps"] == f"{resume['resumed_from'] + 1}-6"
    assert "| 0 | yes | ok |" in text
    runs = tmp_path / "report" / "scaling_runs"
    assert not list(runs.glob("**/checkpoint")), "the resume check's checkpoints are removed"


def test_rows_replace_by_kind_model_layout_but_not_by_a_skip():
    old = [speed("gla", "1:fsdp", tok_s_dev=1.0), speed("gla", "2:fsdp", tok_s_dev=2.0)]
    new = scaling._replace(old, speed("gla", "1:fsdp", tok_s_dev=3.0))
    assert [(r["layout"], r["tok_s_dev"]) for r in new] == [("2:fsdp", 2.0), ("1:fsdp", 3.0)]
    assert scaling._replace(new, speed("gla", "2:fsdp", "skipped", error="budget")) == new
    assert scaling._replace(new, speed("tfm", "2:fsdp", "skipped", error="budget"))[-1]["status"] == "skipped"


def test_spent_budget_skips_runs_and_append_keeps_rows(tmp_path, sample_dir):
    out = tmp_path / "scaling.md"
    earlier = {"header": {"command": "python -m benchmarks.scaling --first"},
               "rows": [speed("transformer_cpu", "1:fsdp", tok_s_dev=10.0, step_s=1.0)]}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(earlier))
    rows = scaling.main(["--model", TINY, "--layouts", "1:fsdp", "2:fsdp", "--resume-check", "2:fsdp", "--budget", "0",
                         "--data", str(sample_dir), "--out", str(out), "--append"])  # fmt: skip
    assert [(r["kind"], r["layout"], r["status"]) for r in rows] == [
        ("speed", "1:fsdp", "ok"),  # the earlier part's row is kept over the skip
        ("speed", "2:fsdp", "skipped"),
        ("resume", "2:fsdp", "skipped"),
    ]
    assert rows[1]["error"] == "--budget 0 s spent" and not (tmp_path / "scaling_runs").exists()
    text = out.read_text()
    assert (
        "| transformer_cpu | 2:fsdp (FSDP 2) | 2 | - | - | - | - | - | - | - | - | skipped: --budget 0 s spent |"
        in text
    )
    assert "- command: python -m benchmarks.scaling --first ; python -m benchmarks.scaling --model" in text


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def test_sigterm_kills_the_running_launch(tmp_path, sample_dir):
    """``timeout`` (SIGTERM) on the sweep leaves no torchrun or rank behind."""
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--model", TINY, "--layouts", "2:fsdp", "--steps", "400",
           "--warmup", "1", "--batch-size", "2", "--seq-len", "32", "--data", str(sample_dir),
           "--out", str(tmp_path / "s.md")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=scaling.child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, ranks = time.monotonic() + 120, []
        while time.monotonic() < deadline and len(ranks) < 2:
            time.sleep(0.2)
            tree = descendants(proc.pid)
            ranks = [p for p in tree if "flame.train" in cmdline(p) and "torch.distributed.run" not in cmdline(p)]
        assert len(ranks) >= 2, "the ranks did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not any(alive(p) for p in tree), "a process of the launch survived SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
