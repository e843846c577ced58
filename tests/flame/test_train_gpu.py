"""GPU runs of the trainer (run on the GPU machine: ``pytest -m gpu tests/flame/test_train_gpu.py -s``).

340M models, bf16 FSDP, B=8 x T=2048 on the counting stream for 30 steps: the loss must go
down and the throughput/memory/MFU line is printed for the notes (issue 8 measures properly).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.flame.test_train import ROOT, launch

MODELS = ["transformer_340M.json", "gla_340M.json"]


def gpu_args(model: str, steps: int = 30) -> list[str]:
    config = ROOT / "configs" / model
    assert config.exists(), f"{config} is missing"
    return [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--model.config", str(config),
        "--optimizer.implementation", "fused",
        "--optimizer.lr", "1e-3",
        "--lr_scheduler.warmup_steps", "10",
        "--training.batch_size", "8",
        "--training.seq_len", "2048",
        "--training.steps", str(steps),
        "--training.mixed_precision_param", "bfloat16",
        "--metrics.log_freq", "5",
    ]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("model", MODELS)
def test_fsdp_bf16_340M(model, nproc, tmp_path):
    if torch.cuda.device_count() < nproc:
        pytest.skip(f"needs {nproc} GPUs, this machine has {torch.cuda.device_count()}")
    proc, rows = launch(nproc, gpu_args(model), tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-5000:]
    losses = [r["loss/avg"] for r in rows]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 1.0, losses
    last = rows[-1]
    print(
        f"\n{model} x{nproc} GPU(s): {last['throughput/tokens_per_sec_per_device']:,.0f} tok/s/GPU, "
        f"MFU {last.get('throughput/mfu_pct', float('nan')):.1f}%, peak {last['memory/peak_reserved_gib']:.1f} GiB, "
        f"step {1000 * last['time/step_s']:.0f} ms"
    )
    assert last["throughput/mfu_pct"] > 0


@pytest.mark.gpu
def test_tensor_parallel_and_compile_on_gpu(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 GPUs, this machine has {torch.cuda.device_count()}")
    args = gpu_args("transformer_340M.json", steps=10) + [
        "--parallelism.tensor_parallel_degree",
        "2",
        "--training.compile",
    ]
    proc, rows = launch(2, args, tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert rows[-1]["loss/avg"] < rows[0]["loss/avg"]
