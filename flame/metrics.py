"""Training metrics: FLOPs per token (the model's own rule), throughput/MFU/memory, and where they go.

Console (rank 0): one progress line per logged step with step/total and ETA. Backends:
``metrics.jsonl`` in the dump folder, TensorBoard and wandb (each imported only when enabled).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta
from typing import Any

from torchtitan.tools.logging import logger

from fla.models import flops as model_flops
from fla.models.flops import TokenMixer, softmax_attention_from_config
from flame import device

# ----------------------------------------------------------------------------- FLOPs


def causal_lm_class(config) -> type | None:
    """The class transformers' ``AutoModelForCausalLM`` builds for ``config`` (``None``: none registered)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return None


def token_mixer(config) -> TokenMixer | None:
    """The token mixer of ``config``'s layers: the one its model class states (fla models, via
    ``token_mixer(config)``), else softmax attention sized by the config's generic fields."""
    states = getattr(causal_lm_class(config), "token_mixer", None)
    mixer = states(config) if states is not None else softmax_attention_from_config(config)
    if mixer is None:
        logger.warning(f"No FLOPs rule for model_type '{getattr(config, 'model_type', '')}': MFU counts 6N only")
    return mixer


def flops_per_token(config, num_params: int, num_embedding_params: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward) of an HF causal LM.

    ``6 * N`` for the matmuls of the non-embedding parameters (the tied LM head counted once
    more), plus each layer's token mixer (:func:`token_mixer`); the rule is
    :mod:`fla.models.flops`.

    Args:
        config: the model's HF config.
        num_params: all parameters (shared ones once).
        num_embedding_params: parameters of the input embedding.
        seq_len: tokens each token can attend to at most (``training.seq_len`` or ``context_len``).
    """
    return model_flops.flops_per_token(config, num_params, num_embedding_params, seq_len, token_mixer(config))


# ----------------------------------------------------------------------------- backends


class JsonlLogger:
    """Appends ``{"step": ..., <metrics>}`` lines to a file."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.file = open(path, "a")  # noqa: SIM115 - closed in close()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def build_backends(job, rank: int) -> list:
    """The enabled metric backends of this rank (rank 0 only unless ``metrics.save_for_all_ranks``)."""
    m = job.metrics
    if rank != 0 and not m.save_for_all_ranks:
        return []
    dump = job.job.dump_folder
    log_dir = os.path.join(dump, m.save_tb_folder, datetime.now().strftime("%Y%m%d-%H%M"))
    suffix = f"rank_{rank}" if m.save_for_all_ranks else ""
    backends: list = []
    if m.enable_jsonl:
        name = f"metrics_{suffix}.jsonl" if suffix else "metrics.jsonl"
        backends.append(JsonlLogger(os.path.join(dump, name)))
    if m.enable_tensorboard:
        from torchtitan.components.metrics import TensorBoardLogger

        backends.append(TensorBoardLogger(os.path.join(log_dir, suffix)))
    if m.enable_wandb:
        try:
            import wandb  # noqa: F401
        except ImportError as err:
            raise RuntimeError("metrics.enable_wandb = true but wandb is not installed: pip install wandb") from err
        from torchtitan.components.metrics import WandBLogger

        os.environ.setdefault("WANDB_PROJECT", m.wandb_project)
        os.environ.setdefault("WANDB_MODE", m.wandb_mode)
        backends.append(WandBLogger(os.path.join(log_dir, suffix), job))
    return backends


# ----------------------------------------------------------------------------- processor


class MetricsProcessor:
    """Accumulates tokens and data-wait time between logs; turns a step's numbers into metrics.

    Args:
        job: the JobConfig.
        flops_per_token: from :func:`flops_per_token`.
        non_data_parallel_size: ranks that share one data shard (tensor parallel degree).
        rank: global rank (rank 0 prints the progress line).
    """

    def __init__(self, job, flops_per_token: float, non_data_parallel_size: int = 1, rank: int = 0):
        self.job, self.rank = job, rank
        self.flops_per_token = flops_per_token
        self.non_dp = non_data_parallel_size
        self.peak_flops = device.peak_flops()
        self.backends = build_backends(job, rank)
        self.start_time = self.last_time = time.perf_counter()
        self.last_step = 0
        self.tokens = 0
        self.data_wait = 0.0
        device.reset_peak_memory()

    def record(self, tokens: int, data_wait_s: float) -> None:
        """Add one step's local tokens and the seconds spent waiting for its batches."""
        self.tokens += tokens
        self.data_wait += data_wait_s

    def should_log(self, step: int) -> bool:
        """First step, every ``log_freq`` steps, and the last step."""
        return step == 1 or step % self.job.metrics.log_freq == 0 or step == self.job.training.steps

    def log(self, step: int, values: dict[str, float]) -> dict[str, float]:
        """Log ``values`` (loss, grad norm, lr, ...) with throughput, MFU and memory; returns all metrics."""
        now = time.perf_counter()
        elapsed = max(now - self.last_time, 1e-9)
        steps = max(step - self.last_step, 1)
        tps = self.tokens / (elapsed * self.non_dp)
        mem = device.memory_stats()
        metrics = dict(values)
        metrics.update(
            {
                "throughput/tokens_per_sec_per_device": tps,
                "throughput/tflops_per_device": self.flops_per_token * tps / 1e12,
                "time/step_s": elapsed / steps,
                "time/data_wait_pct": 100.0 * self.data_wait / elapsed,
                "memory/peak_active_gib": mem.peak_active_gib,
                "memory/peak_reserved_gib": mem.peak_reserved_gib,
            }
        )
        if self.peak_flops:
            metrics["throughput/mfu_pct"] = 100.0 * self.flops_per_token * tps / self.peak_flops
        for backend in self.backends:
            backend.log(metrics, step)
        if self.rank == 0:
            logger.info(self.progress_line(step, metrics, mem))
        self.last_time, self.last_step, self.tokens, self.data_wait = now, step, 0, 0.0
        device.reset_peak_memory()
        return metrics

    def progress_line(self, step: int, metrics: dict[str, float], mem: device.MemStats) -> str:
        """``step 10/100 (10%) | loss ... | ... | eta 0:01:23``."""
        total = self.job.training.steps
        per_step = (time.perf_counter() - self.start_time) / max(step, 1)
        eta = timedelta(seconds=round(per_step * (total - step)))
        parts = [
            f"step {step}/{total} ({100 * step / total:.0f}%)",
            f"loss {metrics['loss/avg']:.4f} (max {metrics['loss/max']:.4f})",
            f"gnorm {metrics['grad_norm']:.3f}",
            f"lr {metrics['lr']:.2e}",
            f"tok/s/dev {metrics['throughput/tokens_per_sec_per_device']:,.0f}",
        ]
        if "throughput/mfu_pct" in metrics:
            parts.append(f"mfu {metrics['throughput/mfu_pct']:.1f}%")
        parts.append(f"mem {mem.peak_reserved_gib:.2f}/{mem.capacity_gib:.0f} GiB")
        parts.append(f"data {metrics['time/data_wait_pct']:.1f}%")
        if metrics.get("skipped_steps"):
            parts.append(f"skipped {int(metrics['skipped_steps'])}")
        parts.append(f"eta {eta}")
        return " | ".join(parts)

    def close(self) -> None:
        """Flush and close every backend."""
        for backend in self.backends:
            backend.close()
