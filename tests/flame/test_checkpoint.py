"""Checkpoints and auto-resume (flame/checkpoint.py over torchtitan's CheckpointManager).

In-process tests drive the manager on a small module in a one-rank gloo group (saving
policy, discovery of complete checkpoints, fallbacks, errors). The torchrun tests train the
tiny Transformer++ with FSDP over 2 CPU ranks on the sample corpus and check exact resume:
a run killed (SIGKILL) at a random step and relaunched with the same command, then killed
inside a save and relaunched again, logs the same per-step losses and reads the same
batches as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.stateful import Stateful

from flame.checkpoint import build_checkpointer, is_complete, rng_state, set_rng_state, step_folders
from flame.config import ConfigError, FlameConfigManager, JobConfig
from flame.process_tree import kill_tree
from tests.flame.test_train import ROOT, free_port, launch
from tests.harness import child_pythonpath

SCRIPT = str(ROOT / "tests" / "flame" / "dist" / "train_checkpointed.py")
TINY = str(ROOT / "configs" / "transformer_cpu.json")


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "args, match",
    [
        (["--checkpoint.interval", "0"], r"checkpoint\.interval = 0: must be >= 1"),
        (["--checkpoint.keep_latest_k", "1"], r"keep_latest_k = 1: 0 keeps all; otherwise >= 2"),
        (["--checkpoint.keep_latest_k", "-3"], r"keep_latest_k = -3: 0 keeps all"),
        (["--checkpoint.load_step", "-2"], r"load_step = -2: -1 \(the newest complete checkpoint\)"),
        (["--checkpoint.async_mode", "sometimes"], r"async_mode = 'sometimes': expected one of 'disabled', 'async'"),
        (["--checkpoint.export_dtype", "int8"], r"export_dtype = 'int8': expected one of 'float16'"),
        (["--checkpoint.folder", " "], r"checkpoint\.folder = ' ': must name a folder"),
        (["--checkpoint.exclude_from_loading", "model,weights"], r"'weights' is not one of model, optimizer"),
        (["--checkpoint.last_save_in_hf"], r"last_save_in_hf = true: not supported by flame; export with"),
        (["--checkpoint.initial_load_in_hf"], r"initial_load_in_hf = true: not supported by flame"),
        (["--checkpoint.initial_load_path", "/nonexistent/step-0"], r"initial_load_path = .*needs checkpoint\.enable"),
        (
            ["--checkpoint.enable", "--checkpoint.initial_load_path", "/nonexistent/step-0"],
            r"initial_load_path = '/nonexistent/step-0': no such folder; give a DCP step folder or an HF model folder",
        ),
        (
            ["--checkpoint.enable", "--checkpoint.initial_load_path", "configs"],
            r"initial_load_path = 'configs': no \.metadata \(DCP\) and no \*\.safetensors \(HF\) in it",
        ),
    ],
)
def test_bad_checkpoint_settings(args, match):
    with pytest.raises(ConfigError, match=match) as err:
        FlameConfigManager().parse_args(["--model.config", TINY, *args], world_size=1)
    assert str(err.value).startswith("command line: ") and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only rejection")
def test_pinned_memory_async_needs_cuda():
    with pytest.raises(
        ConfigError, match=r"async_mode = 'async_with_pinned_mem': pinned-memory staging needs a CUDA device"
    ):
        FlameConfigManager().parse_args(["--model.config", TINY, "--checkpoint.async_mode", "async_with_pinned_mem"], 1)


def test_good_checkpoint_settings_parse():
    args = ["--checkpoint.enable", "--checkpoint.keep_latest_k", "0", "--checkpoint.async_mode", "async"]
    job = FlameConfigManager().parse_args(["--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"), *args], 1)
    c = job.checkpoint
    assert (
        c.enable and c.keep_latest_k == 0 and c.async_mode == "async" and c.interval == 20 and c.folder == "checkpoint"
    )


# ----------------------------------------------------------------------------- the manager in one process


class Box(Stateful):
    """A stand-in optimizer / lr scheduler / train state: a dict of values."""

    def __init__(self, **values):
        self.values = values

    def state_dict(self):
        return dict(self.values)

    def load_state_dict(self, state_dict):
        self.values = dict(state_dict)


@pytest.fixture
def one_rank(tmp_path):
    """A one-rank gloo process group (what the manager's saves expect)."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def manager(dump: Path, model: nn.Module | None = None, **checkpoint):
    job = JobConfig()
    job.job.dump_folder = str(dump)
    job.checkpoint.enable = True
    for key, value in checkpoint.items():
        setattr(job.checkpoint, key, value)
    model = model or nn.Linear(7, 5)
    state = Box(step=0)
    m = build_checkpointer(job, model, Box(moment=torch.zeros(3)), Box(last=0), Box(pos=0), state)
    return m, model, state


def keys_and_dtypes(path: Path) -> dict[str, torch.dtype | None]:
    md = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k: getattr(getattr(v, "properties", None), "dtype", None) for k, v in md.items()}


def train_to(m, model, state, steps, last):
    for step in steps:
        with torch.no_grad():
            model.weight.fill_(step)
        state.values["step"] = step
        m.save(step, last_step=step == last)


def test_interval_last_model_only_export_dtype_and_keep_latest_k(one_rank, tmp_path):
    m, model, state = manager(tmp_path, interval=2, keep_latest_k=2, export_dtype="bfloat16")
    train_to(m, model, state, range(1, 8), last=7)
    m.close()  # joins the purge thread
    folders = step_folders(str(tmp_path / "checkpoint"))
    assert sorted(folders) == [6, 7], "keep_latest_k = 2 also holds after the final save"
    full, final = keys_and_dtypes(Path(folders[6])), keys_and_dtypes(Path(folders[7]))
    assert final == {"weight": torch.bfloat16, "bias": torch.bfloat16}, "model-only, HF names at top level"
    assert full["weight"] == torch.float32 and {"train_state.step", "optimizer.moment", "dataloader.pos"} <= set(full)


def test_resume_skips_incomplete_and_unreadable_checkpoints(one_rank, tmp_path, caplog):
    m, model, state = manager(tmp_path, interval=2, keep_latest_k=0)
    train_to(m, model, state, range(1, 7), last=100)
    m.close()
    ckpt = tmp_path / "checkpoint"
    (ckpt / "step-6" / ".metadata").unlink()  # a save killed before its metadata
    (ckpt / "step-4" / ".metadata").write_bytes(b"not a pickle")  # a corrupt one

    m, model, state = manager(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert m.load() is True
    assert state.values["step"] == 2 and torch.equal(model.weight, torch.full((5, 7), 2.0))
    text = caplog.text
    assert f"Checkpoint {ckpt / 'step-6'} is incomplete (no .metadata" in text
    assert f"Checkpoint {ckpt / 'step-4'} could not be loaded" in text
    m.close()


@pytest.mark.parametrize("damage", ["truncated", "deleted", "garbled", "all"])
def test_resume_skips_a_checkpoint_with_a_damaged_data_file(one_rank, tmp_path, caplog, damage):
    """A truncated, deleted or overwritten ``*.distcp`` of the newest step: a warning naming folder and file,
    then the next older complete checkpoint loads (DCP's CheckpointException is a BaseException)."""
    m, model, state = manager(tmp_path, interval=2, keep_latest_k=0)
    train_to(m, model, state, range(1, 7), last=100)
    m.close()
    ckpt = tmp_path / "checkpoint"
    newest = ckpt / "step-6"
    (data,) = newest.glob("*.distcp")
    blob = data.read_bytes()
    if damage == "truncated":
        data.write_bytes(blob[: len(blob) // 2])
    elif damage == "deleted":
        data.unlink()
    else:  # same size, garbage inside: only the load itself finds out
        data.write_bytes(bytes(len(blob)))
    if damage == "all":
        for step in (2, 4):
            next((ckpt / f"step-{step}").glob("*.distcp")).unlink()

    m, model, state = manager(tmp_path)
    if damage == "all":
        with pytest.raises(ConfigError, match=r"checkpoint\.folder = .*: no checkpoint in it could be loaded"):
            m.load()
        m.close()
        return
    with caplog.at_level(logging.WARNING):
        assert m.load() is True
    assert state.values["step"] == 4 and torch.equal(model.weight, torch.full((5, 7), 4.0))
    line = next(x for x in caplog.text.splitlines() if f"Checkpoint {newest} could not be loaded" in x)
    assert "trying an older one" in line
    if damage != "garbled":
        assert f"{data} is {'missing' if damage == 'deleted' else 'truncated'}" in line
    m.close()


def test_load_step_errors_name_the_folder_and_the_steps(one_rank, tmp_path):
    m, model, state = manager(tmp_path, interval=3, keep_latest_k=0)
    train_to(m, model, state, range(1, 8), last=100)
    (tmp_path / "checkpoint" / "step-9").mkdir()
    m.close()
    m, _, _ = manager(tmp_path)
    folder = tmp_path / "checkpoint"
    with pytest.raises(
        ConfigError, match=rf"load_step = 5: {folder}/step-5 is not found; complete steps in {folder}: 3, 6"
    ):
        m.load(step=5)
    with pytest.raises(ConfigError, match=r"step-9 is an interrupted save \(no \.metadata\)"):
        m.load(step=9)
    assert m.load(step=3) and torch.equal(m.states["model"].model[0].weight, torch.full((5, 7), 3.0))
    m.close()


def test_initial_load_path_when_the_folder_has_no_complete_checkpoint(one_rank, tmp_path):
    seed = tmp_path / "seed" / "step-0"
    weights = {"weight": torch.randn(5, 7), "bias": torch.randn(5)}
    dcp.save(weights, checkpoint_id=str(seed))  # what flame.convert.hf_to_dcp writes: model keys only
    (tmp_path / "run" / "checkpoint" / "step-4").mkdir(parents=True)  # a first save that was interrupted
    m, model, state = manager(tmp_path / "run", initial_load_path=str(seed))
    assert m.load() is True
    assert torch.equal(model.weight, weights["weight"]) and state.values["step"] == 0
    m.close()


def test_finished_run_and_final_export_are_not_resumed_from(one_rank, tmp_path):
    m, model, state = manager(tmp_path, interval=2, keep_latest_k=0)
    train_to(m, model, state, range(1, 6), last=5)
    m.close()
    m, model, state = manager(tmp_path)
    assert m.finished_step(5) == 5 and m.finished_step(8) is None
    assert m.load() is True and state.values["step"] == 4, "step-5 is model-only: resume from step-4"
    m.close()


@pytest.mark.parametrize(
    "mode, device",
    [("async", "cpu"), pytest.param("async_with_pinned_mem", "cuda", marks=pytest.mark.gpu)],
)
def test_async_save_snapshots_the_step_it_was_taken_at(one_rank, tmp_path, mode, device, monkeypatch):
    """Async saves (gloo for the upload): weights changed while the upload runs are not in the checkpoint."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # the pinned-memory mode's upload process rendezvous here
    m, model, state = manager(tmp_path, nn.Linear(7, 5, device=device), interval=2, keep_latest_k=0, async_mode=mode)
    train_to(m, model, state, [2], last=100)
    assert m.save_future is not None, "the save runs in the background"
    m.maybe_wait_for_staging()  # what the trainer calls before the optimizer step
    with torch.no_grad():
        model.weight.fill_(-1.0)  # the next optimizer step, while the upload may still run
    state.values["step"] = 3
    m.close()  # waits for the upload
    m, model, state = manager(tmp_path, nn.Linear(7, 5, device=device))
    assert m.load() and state.values["step"] == 2
    assert torch.equal(model.weight.cpu(), torch.full((5, 7), 2.0))
    m.close()


def test_train_state_entries_of_other_ranks_are_not_required(one_rank, tmp_path, caplog):
    """A train state saved by rank 0 of another world loads here; this rank's RNG entry is reported missing."""
    m, model, state = manager(tmp_path, interval=1, keep_latest_k=0)
    state.values["rng"] = {"rank_0": b"rank 0 state"}
    train_to(m, model, state, [1], last=100)
    m.close()
    m, model, state = manager(tmp_path)
    state.values["rng"] = {"rank_1": b"unchanged"}
    with caplog.at_level(logging.WARNING):
        assert m.load()
    assert state.values["step"] == 1 and state.values["rng"] == {}
    assert "train_state.rng.rank_1 is not in the checkpoint" in caplog.text
    m.close()


def test_rng_state_round_trip():
    random.seed(1)
    torch.manual_seed(1)
    blob = rng_state()
    first = (torch.rand(3), random.random())
    set_rng_state(blob)
    assert torch.equal(torch.rand(3), first[0]) and random.random() == first[1]


# ----------------------------------------------------------------------------- torchrun: exact resume


def args_for(sample_dir: Path, steps: int, interval: int, extra=()) -> list[str]:
    return [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--data.dataset", str(sample_dir / "data"),
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--training.seq_len", "32", "--training.batch_size", "2",
        "--training.steps", str(steps), "--training.deterministic",
        "--lr_scheduler.warmup_steps", "2",
        "--metrics.log_freq", "1",
        "--checkpoint.interval", str(interval), "--checkpoint.keep_latest_k", "2",
        *extra,
    ]  # fmt: skip


def run(args, dump: Path, env=None, ok=True):
    proc, _ = launch(2, args, dump, env=env, script=SCRIPT, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def kill_at(args, dump: Path, step: int, delay: float) -> int:
    """Launch like ``launch`` (each batch ``delay`` s late) and SIGKILL every process once ``step`` is logged."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "--log-dir", str(dump / "ranks"), "--redirects", "0:3,1:3",
           SCRIPT, *args, "--job.dump_folder", str(dump)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath(), "FLAME_TEST_BATCH_DELAY": str(delay)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            rows = metric_rows(dump)
            if rows and rows[-1]["step"] >= step:
                return rows[-1]["step"]
            assert proc.poll() is None, f"the run ended before step {step} was seen"
            time.sleep(0.05)
        raise AssertionError(f"step {step} not reached")
    finally:
        kill_tree(proc)


def metric_rows(dump: Path) -> list[dict]:
    path = dump / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def losses(dump: Path) -> dict[int, float]:
    """Loss per step, the last logged value winning (a resumed run logs the replayed steps again)."""
    return {r["step"]: r["loss/avg"] for r in metric_rows(dump)}


def batches(dump: Path, rank: int) -> list[list[str]]:
    """Per launch, the digests of the batches that rank read, in order."""
    launches: dict[int, list[str]] = {}
    for line in (dump / f"batches-rank{rank}.jsonl").read_text().splitlines():
        if not line.endswith("}"):
            continue  # a line cut by the kill
        row = json.loads(line)
        launches.setdefault(row["launch"], []).append(row["sha"])
    return list(launches.values())


def resumed_from(proc) -> int:
    text = proc.stdout + proc.stderr
    marker = "Loading the checkpoint "
    line = next(x for x in text.splitlines() if marker in x)
    return int(line.split(marker)[1].split()[0].rsplit("step-", 1)[1])


def newest_complete(dump: Path) -> int:
    return max(step for step, path in step_folders(str(dump / "checkpoint")).items() if is_complete(path))


def check_exact_resume(
    sample_dir: Path, tmp_path: Path, steps: int, interval: int, seed: int, extra=(), delay: float = 0.15
) -> Path:
    """A: ``steps`` uninterrupted. B: SIGKILL at a random step, relaunch killed inside the next save, relaunch."""
    args = args_for(sample_dir, steps, interval, extra)
    ref = tmp_path / "A"
    run(args, ref)
    ref_losses = losses(ref)
    assert sorted(ref_losses) == list(range(1, steps + 1))

    dump = tmp_path / "B"
    kill_at(args, dump, random.Random(seed).randint(interval + 1, steps - interval - 2), delay)
    first = newest_complete(dump)
    die_step = first + interval
    proc = run(args, dump, env={"FLAME_TEST_DIE_IN_SAVE": str(die_step)}, ok=False)  # killed inside a save
    assert proc.returncode != 0 and f"dying while saving step-{die_step}" in proc.stderr, proc.stderr[-3000:]
    assert resumed_from(proc) == first
    partial = dump / "checkpoint" / f"step-{die_step}"
    assert partial.is_dir() and any(partial.iterdir()) and not is_complete(str(partial))

    proc = run(args, dump)  # the same command again
    text = proc.stdout + proc.stderr
    assert f"Checkpoint {partial} is incomplete (no .metadata: its save was interrupted); skipping it" in text
    second = resumed_from(proc)
    assert second == die_step - interval == first

    got = losses(dump)
    assert sorted(got) == list(range(1, steps + 1))
    diff = [(s, ref_losses[s], got[s]) for s in ref_losses if got[s] != ref_losses[s]]
    assert not diff, f"losses differ after resume (step, A, B): {diff[:5]}"
    for rank in (0, 1):
        (a,) = batches(ref, rank)
        b = batches(dump, rank)
        assert len(a) == steps and len(b) == 3
        assert b[0] == a[: len(b[0])], f"rank {rank}: the killed launch read other batches"
        assert b[1] == a[first : first + len(b[1])], f"rank {rank}: the data after resuming at {first} differ"
        assert b[2] == a[second:], f"rank {rank}: the data after resuming at {second} differ"
    folders = step_folders(str(dump / "checkpoint"))
    assert len(folders) == 2 and max(folders) == steps, f"keep_latest_k = 2: {sorted(folders)}"
    return dump


def test_exact_resume_after_sigkill_and_a_killed_save(sample_dir, tmp_path):
    """FSDP x2 on gloo: killed at a random step, relaunched, killed inside a save, relaunched: A's losses and data."""
    dump = check_exact_resume(sample_dir, tmp_path, 20, 4, seed=int(os.environ.get("FLAME_TEST_SEED", "0")))
    full, final = keys_and_dtypes(dump / "checkpoint" / "step-16"), keys_and_dtypes(dump / "checkpoint" / "step-20")
    model_keys = {k for k in full if k.split(".")[0] not in ("optimizer", "lr_scheduler", "dataloader", "train_state")}
    assert "model.embeddings.weight" in model_keys and "lm_head.weight" in model_keys
    assert set(final) == model_keys, "the final save holds the model only, under the HF model's names"


@pytest.mark.slow
def test_async_checkpoints_resume_exactly(sample_dir, tmp_path):
    """checkpoint.async_mode = 'async' on gloo: the saves snapshot the step they were taken at."""
    check_exact_resume(sample_dir, tmp_path, 24, 4, seed=1, extra=["--checkpoint.async_mode", "async"])


@pytest.mark.slow
def test_exact_resume_over_2000_steps(sample_dir, tmp_path):
    seed = int(os.environ.get("FLAME_TEST_SEED", time.time()))
    check_exact_resume(sample_dir, tmp_path, 2000, 250, seed=seed, delay=0.0)


@pytest.mark.slow  # 140 s on the 2-core machine
def test_context_parallel_resumes_exactly_and_under_another_degree(sample_dir, tmp_path):
    """CP 2 (2 ranks, FSDP over them) on a GLA with short convolutions: killed at a random step, relaunched, killed
    inside a save, relaunched: A's losses bitwise. Then A's step-9 checkpoint continues on one rank without context
    parallel (the model state does not depend on the degree; the data-loader state belongs to the data-parallel
    rank, which the CP ranks share: dp = 1 in both) with A's losses within fp32 reordering."""
    cp = ["--model.config", str(ROOT / "configs" / "gla_cpu.json"), "--parallelism.context_parallel_degree", "2"]
    seed = int(os.environ.get("FLAME_TEST_SEED", "0"))
    check_exact_resume(sample_dir, tmp_path, 12, 3, seed=seed, extra=cp)
    ref = losses(tmp_path / "A")
    args = args_for(sample_dir, 12, 3, cp[:2]) + [
        "--checkpoint.initial_load_path", str(tmp_path / "A" / "checkpoint" / "step-9"),
        "--checkpoint.initial_load_model_only", "false",
    ]  # fmt: skip
    proc, _ = launch(1, args, tmp_path / "one", script=SCRIPT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    got = losses(tmp_path / "one")
    assert sorted(got) == list(range(10, 13))
    for step, loss in got.items():
        assert loss == pytest.approx(ref[step], rel=2e-5), f"step {step}: {loss} against CP 2's {ref[step]}"
