"""train.sh: config queries, errors before launch, and a two-"node" HSDP job on one machine (CPU, gloo)
that checkpoints, resumes when relaunched, and exports the HF model on node 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from flame.launch import cause_of_failure
from flame.launch import main as launch_main
from tests.harness import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SH = ROOT / "train.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_args(sample_dir: Path, dump: Path, steps: int) -> list[str]:
    return [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--job.dump_folder", str(dump),
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--data.dataset", str(sample_dir / "data"),
        "--training.batch_size", "2",
        "--training.seq_len", "32",
        "--training.steps", str(steps),
        "--lr_scheduler.warmup_steps", "1",
        "--metrics.log_freq", "1",
        "--checkpoint.interval", "2",
        "--checkpoint.last_save_model_only", "false",
    ]  # fmt: skip


def env_for(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RDZV_ENDPOINT", "NGPU", "NNODE")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", "LOG_RANK": "0", "PYTHONPATH": child_pythonpath()})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_launch_query(capsys, sample_dir, tmp_path):
    args = tiny_args(sample_dir, tmp_path / "dump", steps=3)
    assert launch_main(["--get", "job.dump_folder", "checkpoint.enable", "model.custom_module", "--", *args]) == 0
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "dump"), "true", ""]
    assert launch_main(["--get", "job.nope", "--", *args]) == 2
    assert "no config key 'job.nope'" in capsys.readouterr().err
    # validated for the launch's world size: replicate 2 does not divide 3 ranks
    bad = [*args, "--parallelism.data_parallel_replicate_degree", "2"]
    assert launch_main(["--world-size", "3", "--get", "job.dump_folder", "--", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flame: config error: command line: parallelism.data_parallel_replicate_degree = 2")


def test_config_error_stops_before_torchrun(tmp_path):
    proc = subprocess.run(
        ["bash", str(TRAIN_SH), "--job.config_file", str(tmp_path / "missing.toml")],
        cwd=tmp_path, env=env_for(NGPU=1), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "flame: config error: command line: job.config_file" in proc.stderr
    assert "no such file" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr and "train.sh: node" not in proc.stdout


def test_errors_the_workers_would_find_stop_before_torchrun(sample_dir, tmp_path):
    """Model config + TP, tokenizer and dataset are checked before launching: one line, exit 2, no torchrun."""
    model = str(ROOT / "configs" / "transformer_cpu.json")
    args = [*tiny_args(sample_dir, tmp_path / "dump", steps=3), "--model.config", model]
    cases = [
        (3, ["--parallelism.tensor_parallel_degree", "3"], "parallelism.tensor_parallel_degree = 3: num_heads = 4"),
        (1, ["--data.dataset", str(tmp_path / "empty")], "data.dataset = "),
    ]
    (tmp_path / "empty").mkdir()
    for ngpu, extra, message in cases:
        proc = subprocess.run(["bash", str(TRAIN_SH), *args, *extra], cwd=tmp_path, env=env_for(NGPU=ngpu),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"flame: config error: command line: {message}") or last.startswith(
            f"flame: config error: {message}"
        ), last
        assert "train.sh: node" not in proc.stdout and "ChildFailedError" not in proc.stderr


def test_a_worker_error_ends_the_output_with_its_line(sample_dir, tmp_path):
    """An error only a worker can find (here: checkpoint.load_step that is not there): its line last, exit 2."""
    args = [*tiny_args(sample_dir, tmp_path / "dump", steps=3), "--checkpoint.load_step", "7",
            "--model.config", str(ROOT / "configs" / "transformer_cpu.json")]  # fmt: skip
    proc = subprocess.run(["bash", str(TRAIN_SH), *args], cwd=tmp_path, env=env_for(NGPU=2, EXPORT_HF=0),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flame: config error: checkpoint.load_step = 7: ") and "is not found" in last, last
    assert "ChildFailedError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_the_cause_of_a_failed_job_beats_its_consequences_in_the_same_second(tmp_path):
    """torchrun stamps failures in whole seconds: a rank it killed, or a peer that lost its connection,
    can share the second of the config error that caused them; the config error is still the one said."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failure(rank: int, exitcode: int, message: str | None, stamp: int) -> ProcessFailure:
        error_file = tmp_path / f"error_{rank}.json"
        if message is not None:
            error_file.write_text(json.dumps({"message": message, "timestamp": stamp}))
        out = ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(error_file))
        out.timestamp = stamp
        return out

    config = "flame: config error: checkpoint.load_step = 7: ..."
    killed_first = {0: failure(0, -15, None, 50), 1: failure(1, 2, config, 50)}
    assert ChildFailedError("x", killed_first).get_first_failure()[0] == 0  # torchrun's choice: the killed rank
    assert cause_of_failure(killed_first)[0] == 1
    peer_lost = {
        0: failure(0, 1, "flame: DistBackendError: Connection closed by peer", 50),
        1: failure(1, 2, config, 50),
    }
    assert cause_of_failure(peer_lost)[1].message == config
    earlier = {0: failure(0, 1, "flame: RuntimeError: boom", 49), 1: failure(1, 2, config, 50)}
    assert cause_of_failure(earlier)[0] == 0  # an earlier error is the cause, whatever its exit code
    only_killed = {0: failure(0, -9, None, 51), 1: failure(1, -15, None, 50)}
    assert cause_of_failure(only_killed)[0] == 1


def test_bad_launcher_environment_and_overrides_without_a_config_file(tmp_path):
    """NGPU=abc names NGPU; overrides without --job.config_file apply to the offline default config."""
    for name, value in (("NGPU", "abc"), ("NNODE", "0"), ("NODE_RANK", "x")):
        proc = subprocess.run(["bash", str(TRAIN_SH), "--training.steps", "3"], cwd=tmp_path,
                              env=env_for(**{name: value}), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.startswith(f"train.sh: {name}={value}: expected"), proc.stderr
    # configs/tiny_cpu.toml's model (4 heads) is used: TP 3 is refused for it, before launching
    proc = subprocess.run(
        ["bash", str(TRAIN_SH), "--training.steps", "10", "--parallelism.tensor_parallel_degree", "3"],
        cwd=tmp_path, env=env_for(NGPU=3), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "num_heads = 4 of the model config" in proc.stderr.strip().splitlines()[-1], proc.stderr[-3000:]
    assert "model.config = ''" not in proc.stderr


def launch_two_nodes(args: list[str], dump: Path, nproc: int = 1, timeout: int = 300) -> list[str]:
    """Two ``bash train.sh`` launchers (NODE_RANK 0 and 1) forming one NNODE=2 job; returns their outputs."""
    port = free_port()
    procs = []
    for node in range(2):
        env = env_for(NNODE=2, NODE_RANK=node, NGPU=nproc, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        log = open(dump.parent / f"node{node}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(["bash", str(TRAIN_SH), *args], cwd=ROOT, env=env, stdout=log, stderr=log), log))
    outputs = []
    for proc, log in procs:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        outputs.append(Path(log.name).read_text())
    for proc, _ in procs:
        assert proc.returncode == 0, "\n".join(o[-6000:] for o in outputs)
    return outputs


def metric_steps(dump: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (dump / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss/avg"]) for r in rows if "loss/avg" in r]


def two_node_run(sample_dir: Path, dump: Path, steps: int) -> tuple[str, str]:
    args = [*tiny_args(sample_dir, dump, steps=steps), "--parallelism.data_parallel_replicate_degree", "2"]
    return tuple(launch_two_nodes(args, dump))


def test_two_node_hsdp_train_export(sample_dir, tmp_path):
    """NNODE=2 x NGPU=1 on one machine with HSDP (replicate across the "nodes"); node 0 exports HF."""
    dump = tmp_path / "dump"
    node0, node1 = two_node_run(sample_dir, dump, steps=4)
    assert "node 0 of 2" in node0 and "node 1 of 2" in node1
    assert "replicate 2 x shard 1" in node0
    first = metric_steps(dump)
    assert [s for s, _ in first] == [1, 2, 3, 4]
    assert all(loss == loss and 0 < loss < 20 for _, loss in first)
    assert sorted(p.name for p in (dump / "checkpoint").iterdir()) == ["step-2", "step-4"]
    assert "dcp_to_hf: wrote" in node0 and "dcp_to_hf: wrote" not in node1
    assert (dump / "hf" / "model.safetensors").is_file() and (dump / "hf" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_two_node_hsdp_resume(sample_dir, tmp_path):
    """Relaunching both nodes with more steps continues from the latest checkpoint, then re-exports."""
    from transformers import AutoModelForCausalLM

    import fla  # noqa: F401

    dump = tmp_path / "dump"
    two_node_run(sample_dir, dump, steps=4)
    first = metric_steps(dump)
    shutil.rmtree(dump / "hf")
    node0, _ = two_node_run(sample_dir, dump, steps=6)
    resumed = metric_steps(dump)[len(first) :]
    assert [s for s, _ in resumed] == [5, 6], node0[-4000:]
    assert "Training starts at step 5" in node0
    assert sorted(p.name for p in (dump / "checkpoint").iterdir()) == ["step-4", "step-6"]  # keep_latest_k = 2
    model = AutoModelForCausalLM.from_pretrained(str(dump / "hf"))
    assert model.config.model_type == "transformer"


@pytest.mark.slow
def test_no_args_offline_default(tmp_path):
    """``bash train.sh`` with no arguments in a fresh checkout: sample data, tiny training, HF export."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("train.sh", "configs", "scripts"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    proc = subprocess.run(["bash", "train.sh"], cwd=repo, env=env_for(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (repo / "data" / "sample" / "tokenizer").is_dir()
    dump = repo / "outputs" / "tiny_cpu"
    losses = metric_steps(dump)
    assert losses[-1][1] < losses[0][1] - 1.0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import fla  # noqa: F401

    tok = AutoTokenizer.from_pretrained(str(dump / "hf"))
    model = AutoModelForCausalLM.from_pretrained(str(dump / "hf"))
    ids = tok("Ann has", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


# ----------------------------------------------------------------------------- presets and docs

PRESETS = sorted((ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_parses_and_its_model_exists(preset, monkeypatch):
    from flame.config import FlameConfigManager
    from flame.model import load_model_config

    monkeypatch.chdir(ROOT)  # presets name repository-relative paths
    job = FlameConfigManager().parse_args(["--job.config_file", str(preset)], world_size=8)
    model_config = ROOT / job.model.config
    assert model_config.is_file(), f"{preset.name}: model.config {job.model.config} does not exist"
    config = load_model_config(job)
    assert config.model_type == json.loads(model_config.read_text())["model_type"]
    assert job.checkpoint.enable, f"{preset.name}: presets checkpoint (train.sh exports the last one)"


def test_large_presets():
    """340M / 1.3B presets of each family: FineWeb-Edu, bf16, compile, linear CE, checkpoints every 2048 keeping 2."""
    from flame.config import FlameConfigManager

    for family in ("gla", "gated_deltanet", "transformer"):
        for size in ("340M", "1.3B"):
            path = ROOT / "configs" / f"{family}_{size}.toml"
            assert path.is_file(), f"missing preset {path.name}"
            job = FlameConfigManager().parse_args(["--job.config_file", str(path)], world_size=8)
            assert job.model.config == f"configs/{family}_{size}.json"
            assert job.data.dataset == "HuggingFaceFW/fineweb-edu"
            assert job.training.compile and job.training.mixed_precision_param == "bfloat16"
            assert (job.checkpoint.interval, job.checkpoint.keep_latest_k) == (2048, 2)
            assert job.model.overrides == ["fuse_linear_cross_entropy=true"]  # no [tokens, vocab] logits


def test_readme_lists_every_config_key():
    import dataclasses

    from flame.config import JobConfig

    readme = (ROOT / "README.md").read_text()
    root = JobConfig()
    sections = dataclasses.fields(JobConfig)
    keys = [f"{s.name}.{f.name}" for s in sections for f in dataclasses.fields(getattr(root, s.name))]
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"README.md config reference lacks {missing}: regenerate: python -m flame.launch --reference"
    for section in ("## Multi-node", "## Continued pretraining", "## Release", "## Config reference", "#SBATCH"):
        assert section in readme
