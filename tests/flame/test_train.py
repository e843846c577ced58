"""End-to-end training on CPU with gloo: real ``torchrun`` launches of a tiny Llama.

Every run trains on the same global batch per step (8 sequences of the counting stream in
tests/flame/dist/train_synthetic.py), split over ranks and micro-batches differently, so
beyond "the loss goes down" the runs must agree with each other: same initial weights
(same first loss) and the same gradient norms whether 1, 2 or 4 ranks, FSDP, HSDP or TP.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "tests" / "flame" / "dist" / "train_synthetic.py")
STEPS = 6
# global batch = batch_size (2) x gradient_accumulation_steps x data-parallel ranks = 8 sequences
COMMON = [
    "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
    "--training.batch_size", "2",
    "--training.seq_len", "32",
    "--training.steps", str(STEPS),
    "--lr_scheduler.warmup_steps", "1",
    "--metrics.log_freq", "1",
]  # fmt: skip
RUNS = {
    "1 rank": (1, ["--training.gradient_accumulation_steps", "4"]),
    "FSDP x2 + full AC": (2, ["--training.gradient_accumulation_steps", "2", "--activation_checkpoint.mode", "full"]),
    "HSDP 2x1 + selective AC": (
        2,
        [
            "--training.gradient_accumulation_steps",
            "2",
            "--parallelism.data_parallel_replicate_degree",
            "2",
            "--activation_checkpoint.mode",
            "selective",
            "--activation_checkpoint.selective_ac_option",
            "2",
        ],
    ),  # fmt: skip
    "TP x2": (2, ["--training.gradient_accumulation_steps", "4", "--parallelism.tensor_parallel_degree", "2"]),
    "FSDP x4": (4, ["--training.gradient_accumulation_steps", "1"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: list[str], dump: Path, env: dict | None = None, script: str = SCRIPT, timeout=300):
    """Run ``script`` (a path, or ``-m module``) under torchrun, or plain python for one process.

    Rank 0 prints to the console; the other ranks' output goes to ``<dump>/ranks`` and is
    appended to ``stderr`` when the run fails. Returns (completed process, metric rows).
    """
    target = script.split() if script.startswith("-m ") else [script]
    if nproc == 1:
        cmd = [sys.executable, *target]
    else:
        redirects = ",".join(f"{r}:{0 if r == 0 else 3}" for r in range(nproc))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", "--log-dir", str(dump / "ranks"), "--redirects", redirects,
               *target]  # fmt: skip
    cmd += [*args, "--job.dump_folder", str(dump)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", **(env or {})}
    full_env["PYTHONPATH"] = child_pythonpath()
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        for log in sorted((dump / "ranks").glob("**/std*.log")):
            proc.stderr += f"\n===== {log.relative_to(dump)}\n{log.read_text()[-4000:]}"
    metrics = dump / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    return proc, rows


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("train_runs")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each configuration in RUNS trained once: name -> metric rows (one per step)."""
    out = {}
    for name, (nproc, extra) in RUNS.items():
        proc, rows = launch(nproc, COMMON + extra, tmp_path_factory.mktemp("run"))
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), f"{name}: missing steps"
        out[name] = rows
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_loss_goes_down(runs, name):
    losses = [r["loss/avg"] for r in runs[name]]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5, f"{name}: loss did not go down: {losses}"
    last = runs[name][-1]
    assert last["throughput/tokens_per_sec_per_device"] > 0 and last["memory/peak_reserved_gib"] > 0
    assert last["tokens_seen"] == STEPS * 8 * 32 and 0 <= last["time/data_wait_pct"] < 100


@pytest.mark.parametrize("name", [n for n in RUNS if n != "1 rank"])
def test_same_init_and_grad_norms_on_any_layout(runs, name):
    ref, got = runs["1 rank"], runs[name]
    assert got[0]["loss/avg"] == pytest.approx(ref[0]["loss/avg"], rel=1e-6), "initial weights differ"
    for r, g in zip(ref, got):
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=2e-5), f"step {r['step']}: grad norm"
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=2e-5), f"step {r['step']}: loss"
        assert g["lr"] == r["lr"]


def test_one_rank_plain_and_fsdp_checkpoints_continue_on_any_layout(runs, tmp_path):
    """One rank trains plain (no FSDP wrapper, the default) or wrapped (``one_rank_fsdp``): same run; a
    checkpoint of the wrapped one continues plain on one rank and under FSDP on two, with equal results."""
    one = COMMON + ["--training.gradient_accumulation_steps", "4", "--checkpoint.enable"]
    proc, wrapped = launch(1, one + ["--parallelism.one_rank_fsdp", "--checkpoint.interval", "3"], tmp_path / "A")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "no FSDP wrapper" not in proc.stdout + proc.stderr
    for r, g in zip(runs["1 rank"], wrapped, strict=True):
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=1e-6) and g["grad_norm"] == pytest.approx(
            r["grad_norm"], rel=1e-6
        ), f"step {r['step']}: FSDP on one rank differs from the plain model"
    # steps 4-6 again from A's step 3 (weights, optimizer, schedule, step); the synthetic stream keeps no
    # state, so its data starts over on both layouts
    resume = ["--checkpoint.initial_load_path", str(tmp_path / "A" / "checkpoint" / "step-3"),
              "--checkpoint.initial_load_model_only", "false"]  # fmt: skip
    plain = launch(1, one + resume, tmp_path / "B")
    fsdp = launch(2, COMMON + ["--training.gradient_accumulation_steps", "2", "--checkpoint.enable", *resume],
                  tmp_path / "C")  # fmt: skip
    for proc, _ in (plain, fsdp):
        assert proc.returncode == 0, proc.stderr[-5000:]
    assert "One rank: no FSDP wrapper" in plain[0].stdout + plain[0].stderr
    b, c = plain[1], fsdp[1]
    assert [r["step"] for r in b] == [r["step"] for r in c] == [4, 5, 6]
    for r, g in zip(b, c, strict=True):
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=2e-5), f"step {r['step']}: loss"
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=2e-5), f"step {r['step']}: grad norm"
        assert g["lr"] == r["lr"] == wrapped[r["step"] - 1]["lr"]
    for proc, _ in (plain, fsdp):
        assert "step-3 (full state)" in proc.stdout + proc.stderr  # weights, optimizer, schedule, step


def test_flame_train_on_the_sample_corpus(sample_dir, tmp_path):
    """``python -m flame.train`` under torchrun with the real data pipeline (fla Transformer++, FSDP x2)."""
    args = [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--data.dataset", str(sample_dir / "data"),
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--training.seq_len", "64",
        "--training.steps", "8",
        "--metrics.log_freq", "1",
    ]  # fmt: skip
    proc, rows = launch(2, args, tmp_path, script="-m flame.train")
    assert proc.returncode == 0, proc.stderr[-5000:]
    losses = [r["loss/avg"] for r in rows]
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0, losses
    assert "step 8/8 (100%)" in proc.stdout + proc.stderr


def test_single_process_varlen_nan_skips_and_profiling(tmp_path):
    """Plain ``python`` (no torchrun), any HF model, varlen batches, NaN steps 2 and 3 skipped, CPU profiling."""
    config = tmp_path / "nan_llama.json"
    llama = json.loads((ROOT / "configs" / "llama_tiny.json").read_text())
    config.write_text(json.dumps({**llama, "model_type": "nan_llama"}))
    args = COMMON + [
        "--model.config", str(config),
        "--model.custom_module", "tests.flame.dist.nan_llama",
        "--training.varlen", "--training.batch_size", "1",
        "--training.skip_nan_inf", "--training.max_consecutive_nan_inf", "3",
        "--profiling.enable_profiling", "--profiling.profile_freq", "3", "--profiling.profiler_warmup", "1",
    ]  # fmt: skip
    proc, rows = launch(1, args, tmp_path / "out", env={"FLAME_TEST_NAN_CALLS": "2,3"})
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert [r["skipped_steps"] for r in rows] == [0, 1, 2, 2, 2, 2]
    assert math.isnan(rows[1]["grad_norm"]) and math.isnan(rows[2]["loss/avg"])
    losses = [rows[i]["loss/avg"] for i in (0, 3, 4, 5)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert "skipped 2" in proc.stdout + proc.stderr  # the progress line counts them
    assert (tmp_path / "out" / "profile_traces" / "iteration_6" / "rank0_trace.json").exists()

    proc, _ = launch(1, args, tmp_path / "out2", env={"FLAME_TEST_NAN_CALLS": "2,3,4"})
    assert proc.returncode != 0
    assert "3 steps in a row had a NaN/Inf gradient norm (training.max_consecutive_nan_inf = 3)" in proc.stderr, (
        proc.stderr[-3000:]
    )


def test_bad_config_fails_before_any_model_with_one_line(tmp_path):
    args = COMMON + ["--parallelism.data_parallel_shard_degree", "3"]
    proc, _ = launch(2, args, tmp_path)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("flame: config error:")]
    assert errors and all("world size 2" in e for e in errors), proc.stderr[-3000:]
    assert "parallelism.data_parallel_shard_degree = 3" in errors[0]
    assert "Applied FSDP" not in proc.stderr + proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--parallelism.data_parallel_replicate_degree", "2", "--training.gradient_accumulation_steps", "1"],
        ["--parallelism.tensor_parallel_degree", "2", "--training.gradient_accumulation_steps", "2"],
    ],
    ids=["HSDP 2x2", "FSDP 2 x TP 2"],
)
def test_two_dimensional_layouts_on_four_ranks(runs, extra, tmp_path):
    proc, rows = launch(4, COMMON + extra, tmp_path)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for r, g in zip(runs["1 rank"], rows, strict=True):
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=2e-5)
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=2e-5)


@pytest.mark.slow
def test_llama_tensor_parallel_matches_one_rank(tmp_path):
    """The 'llama' TP plan (transformers' LlamaForCausalLM) against the same model on one rank."""
    args = COMMON + ["--model.config", str(ROOT / "configs" / "llama_tiny.json")]
    ref = launch(1, args + ["--training.gradient_accumulation_steps", "4"], tmp_path / "one")
    tp = launch(2, args + ["--training.gradient_accumulation_steps", "4", "--parallelism.tensor_parallel_degree", "2"],
                tmp_path / "tp")  # fmt: skip
    for proc, _ in (ref, tp):
        assert proc.returncode == 0, proc.stderr[-5000:]
    for r, g in zip(ref[1], tp[1]):
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=2e-5)
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=2e-5)


@pytest.mark.slow
def test_compile_matches_eager(runs, tmp_path):
    proc, rows = launch(2, COMMON + RUNS["FSDP x2 + full AC"][1] + ["--training.compile"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for r, g in zip(runs["1 rank"], rows):
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-4)
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=1e-4)
