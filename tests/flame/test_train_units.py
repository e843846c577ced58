"""Single-process pieces of the trainer: FLOPs per model family, metrics backends, LR schedule, NaN policy."""

import importlib.machinery
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from fla.models.flops import TokenMixer
from flame.config import ConfigError, FlameConfigManager
from flame.metrics import MetricsProcessor, build_backends, flops_per_token
from flame.train import NonFiniteGradError, Trainer, build_data, count_targets

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "llama_tiny.json")


def job_for(tmp_path, *args):
    return FlameConfigManager().parse_args(
        ["--model.config", TINY, "--job.dump_folder", str(tmp_path), *args], world_size=1
    )


# ----------------------------------------------------------------------------- FLOPs


def cfg(**kw):
    base = {"num_hidden_layers": 2, "hidden_size": 64, "tie_word_embeddings": False}
    return types.SimpleNamespace(**{**base, **kw})


def test_flops_softmax_attention_grows_with_length():
    llama = cfg(model_type="llama", num_attention_heads=4)
    n, emb = 100_000, 8_000
    for seq_len in (64, 2048):
        expected = 6 * (n - emb) + 2 * 12 * 4 * 16 * seq_len
        assert flops_per_token(llama, n, emb, seq_len) == expected
    windowed = cfg(model_type="llama", num_attention_heads=4, window_size=128)
    assert flops_per_token(windowed, n, emb, 2048) == 6 * (n - emb) + 2 * 12 * 4 * 16 * 128
    tied = cfg(model_type="llama", num_attention_heads=4, tie_word_embeddings=True)
    assert flops_per_token(tied, n, emb, 64) - flops_per_token(llama, n, emb, 64) == 6 * emb


def test_flops_of_fla_models_come_from_the_model_class():
    """fla families state their token mixer (tests/flame/test_model_knowledge.py checks every config's numbers)."""
    from transformers import AutoConfig

    from flame.metrics import token_mixer

    gla = AutoConfig.for_model("gla", hidden_size=64, num_heads=4, expand_k=0.5, expand_v=1.0, num_hidden_layers=2)
    assert token_mixer(gla) == TokenMixer("linear", 4, 8, 16)
    per_layer = 3 * 4 * (4 * 8 * 16 + 2 * 64 * (8 + 16))
    assert flops_per_token(gla, 1000, 0, 64) == 6 * 1000 + 2 * per_layer == flops_per_token(gla, 1000, 0, 8192)


# ----------------------------------------------------------------------------- metrics


def test_metrics_jsonl_and_progress_line(tmp_path):
    job = job_for(tmp_path, "--training.steps", "10", "--metrics.log_freq", "5")
    proc = MetricsProcessor(job, flops_per_token=1e6)
    assert [s for s in range(1, 11) if proc.should_log(s)] == [1, 5, 10]
    proc.record(tokens=1000, data_wait_s=0.0)
    out = proc.log(5, {"loss/avg": 2.5, "loss/max": 2.75, "grad_norm": 0.5, "lr": 1e-3})
    proc.close()
    assert out["throughput/tokens_per_sec_per_device"] > 0 and out["memory/peak_reserved_gib"] > 0
    line = proc.progress_line(5, out, types.SimpleNamespace(peak_reserved_gib=1.0, capacity_gib=8.0))
    assert line.startswith("step 5/10 (50%) | loss 2.5000 (max 2.7500)") and "| eta " in line
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 5 and rows[0]["loss/avg"] == 2.5


def test_tensorboard_backend_writes_events(tmp_path):
    job = job_for(tmp_path, "--metrics.enable_tensorboard", "--metrics.enable_jsonl", "false")
    (backend,) = build_backends(job, rank=0)
    backend.log({"loss/avg": 1.0}, step=1)
    backend.close()
    assert list(tmp_path.glob("tb/*/events.out.tfevents.*")), "no TensorBoard event file"
    assert build_backends(job, rank=1) == []  # only rank 0 logs by default


def test_wandb_backend_runs_offline(tmp_path, monkeypatch):
    calls = {}
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.run = None

    def init(**kwargs):
        import os

        calls["init"] = {**kwargs, "mode": os.environ.get("WANDB_MODE"), "project_env": os.environ.get("WANDB_PROJECT")}
        fake.run = object()

    fake.init = init
    fake.log = lambda metrics, step: calls.setdefault("log", []).append((step, metrics))
    fake.finish = lambda: calls.setdefault("finish", True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    job = job_for(tmp_path, "--metrics.enable_wandb", "--metrics.wandb_mode", "offline", "--metrics.enable_jsonl=0")
    (backend,) = build_backends(job, rank=0)
    backend.log({"loss/avg": 1.0}, step=3)
    backend.close()
    assert calls["init"]["mode"] == "offline" and calls["init"]["project_env"] == "flame"
    assert calls["init"]["dir"].startswith(str(tmp_path)) and calls["init"]["config"]["training"]["steps"] == 10000
    assert calls["log"] == [(3, {"loss/avg": 1.0})] and calls["finish"]


# ----------------------------------------------------------------------------- schedule, targets, NaN policy


def test_warmup_stable_decay_schedule(tmp_path):
    from torchtitan.components.lr_scheduler import build_lr_schedulers
    from torchtitan.components.optimizer import OptimizersContainer

    job = job_for(tmp_path, "--lr_scheduler.warmup_steps", "2", "--lr_scheduler.decay_ratio", "0.5")
    job.lr_scheduler.lr_min = 0.1
    opt = OptimizersContainer([nn.Linear(2, 2)], torch.optim.AdamW, {"lr": 1.0})
    sched = build_lr_schedulers(opt, job.lr_scheduler.to_torchtitan(), 10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.schedulers[0].get_last_lr()[0])
        opt.step()
        sched.step()
    decay = [0.1 + 0.9 * (1 - p / 5) for p in range(1, 5)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, *decay])


def test_count_targets_skips_position_zero_and_ignored():
    labels = torch.tensor([[5, 6, -100, 7], [1, -100, -100, 2]])
    assert count_targets(labels) == 3  # 6, 7 and 2


def trainer_stub(tmp_path, *args):
    trainer = object.__new__(Trainer)
    trainer.job = job_for(tmp_path, *args)
    trainer.step, trainer.skipped_steps, trainer.nonfinite_in_a_row = 7, 0, 0
    return trainer


def test_nonfinite_grad_norm_policy(tmp_path):
    trainer = trainer_stub(tmp_path)
    with pytest.raises(NonFiniteGradError, match=r"step 7: gradient norm is nan; set training\.skip_nan_inf"):
        trainer._on_nonfinite(math.nan)

    trainer = trainer_stub(tmp_path, "--training.skip_nan_inf", "--training.max_consecutive_nan_inf", "3")
    trainer._on_nonfinite(math.inf)
    trainer._on_nonfinite(math.nan)
    assert trainer.skipped_steps == 2 and trainer.nonfinite_in_a_row == 2
    with pytest.raises(NonFiniteGradError, match=r"3 steps in a row had a NaN/Inf gradient norm"):
        trainer._on_nonfinite(math.nan)


def test_data_errors_are_config_errors(tmp_path, sample_dir):
    tok = str(sample_dir / "tokenizer")
    job = job_for(tmp_path, "--model.tokenizer_path", tok, "--data.dataset", str(sample_dir / "data"))
    with pytest.raises(
        ConfigError, match=r"tokenizer_path = '.*': its 512 tokens do not fit the model's vocab_size 128"
    ):
        build_data(job, 0, 1, vocab_size=128)
    job = job_for(tmp_path, "--model.tokenizer_path", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"model\.tokenizer_path = '.*none': tokenizer not found"):
        build_data(job, 0, 1)
    job = job_for(tmp_path, "--model.tokenizer_path", tok, "--data.dataset", str(tmp_path / "no_data"))
    with pytest.raises(ConfigError, match=r"data\.dataset = '.*no_data': ") as info:
        build_data(job, 0, 1)
    assert "\n" not in str(info.value)
    args = ["--model.tokenizer_path", tok, "--data.dataset", str(sample_dir / "data"), "--training.seq_len", "16"]
    loader = build_data(job_for(tmp_path, *args, "--training.batch_size", "2"), 0, 1, vocab_size=2048)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].shape == (2, 16)


def test_data_section_is_validated_with_the_config(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: data\.num_workers = -1: data\.num_workers must be >= 0"):
        job_for(tmp_path, "--data.num_workers", "-1")


_MATERIALIZED_CHECK = """
import os, torch, torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from flame.parallelize import materialized
dist.init_process_group("gloo", init_method="file://" + os.environ["STORE"], rank=0, world_size=1)
x = torch.randn(4, 8, requires_grad=True)
lazy = funcol.all_reduce(x * 2, "sum", dist.group.WORLD)
assert type(lazy).__name__ == "AsyncCollectiveTensor" and lazy.data_ptr() == 0, (type(lazy), lazy.data_ptr())
y = materialized(lazy)
assert type(y) is torch.Tensor and y.data_ptr() != 0
y.sum().backward()
assert torch.equal(x.grad, torch.full_like(x, 2.0))
dist.destroy_process_group()
print("OK")
"""


def test_tp_collective_outputs_reach_kernels_as_real_tensors(tmp_path):
    """Functional collectives return AsyncCollectiveTensor wrappers whose data_ptr() is 0: a Triton kernel
    handed one reads address 0 (on CUDA: a fault that surfaced as cublasCreate INTERNAL_ERROR in TP runs).
    ``materialized`` gives the plain tensor, autograd intact. Own process: it initializes a process group."""
    import os
    import subprocess

    env = {**os.environ, "STORE": str(tmp_path / "store")}
    done = subprocess.run(
        [sys.executable, "-c", _MATERIALIZED_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]


AUTOTUNE_CACHE_PROBE = """
import triton
import flame.train  # noqa: F401 - the trainer's imports, in its order
from fla.ops.common.chunk_h import chunk_state_kernel

tuner = chunk_state_kernel
while not isinstance(tuner, triton.runtime.Autotuner):
    tuner = tuner.fn
print(tuner.cache_results)
"""


@pytest.mark.parametrize("env, expected", [(None, "True"), ("0", "False")])
def test_trainer_caches_triton_autotuning_on_disk(env, expected):
    """Importing flame turns on Triton's autotune disk cache before any fla kernel is decorated (unless set to 0)."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("TRITON_CACHE_AUTOTUNING", "TRITON_INTERPRET")}
    if env is not None:
        child_env["TRITON_CACHE_AUTOTUNING"] = env
    proc = subprocess.run([sys.executable, "-c", AUTOTUNE_CACHE_PROBE], env=child_env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == expected


def test_reshard_after_forward_policy():
    from flame.parallelize import reshard_after_forward

    # default: all blocks but the last when sharded over 2+ ranks; none on one rank (nothing is sharded)
    assert [reshard_after_forward("default", i, 3, 2) for i in range(3)] == [True, True, False]
    assert [reshard_after_forward("default", i, 3, 1) for i in range(3)] == [False, False, False]
    assert [reshard_after_forward("always", i, 3, 1) for i in range(3)] == [True, True, True]
    assert [reshard_after_forward("never", i, 3, 4) for i in range(3)] == [False, False, False]


_FSDP_RESHARD_CHECK = """
import os, sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from flame.parallelize import apply_fsdp
dist.init_process_group("gloo", init_method="file://" + os.environ["STORE"], rank=0, world_size=1)
flat = init_device_mesh("cpu", (1,))
hsdp = init_device_mesh("cpu", (1, 1), mesh_dim_names=("replicate", "shard"))
for mesh, policy, expected in ((flat, "default", [False, False]), (flat, "always", [True, True]),
                               (hsdp, "default", [False, False])):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    apply_fsdp(model, model, mesh, torch.float32, torch.float32, policy)
    got = [b._get_fsdp_state()._fsdp_param_group.post_forward_mesh_info is not None for b in model]
    assert got == expected, (policy, got)
    model(torch.randn(2, 4)).sum().backward()
dist.destroy_process_group()
print("OK")
"""


def test_fsdp_on_one_rank_keeps_blocks_unsharded_between_forward_and_backward(tmp_path):
    """The policy reaches FSDP2 (its post-forward mesh is set only for blocks that reshard). Own process (gloo)."""
    env = {**os.environ, "STORE": str(tmp_path / "store")}
    done = subprocess.run(
        [sys.executable, "-c", _FSDP_RESHARD_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-2000:]
