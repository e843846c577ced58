"""Entry point: ``python -m flame.train --job.config_file configs/<preset>.toml [--section.key value ...]``.

Build (config -> distributed -> data -> model -> optimizer -> checkpointer), resume from the
newest complete checkpoint, then loop { micro-batches -> loss scaled by the global token
count -> backward -> clip -> step (or skip NaN/Inf) -> metrics -> checkpoint every
``checkpoint.interval`` steps }; the last step saves the final (model-only) checkpoint.
Works under ``torchrun`` and as a single process (CPU or one GPU).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.stateful import Stateful
from torchtitan.components.optimizer import build_optimizers
from torchtitan.config import job_config as tt
from torchtitan.distributed import ParallelDims
from torchtitan.distributed import utils as dist_utils
from torchtitan.tools.logging import init_logger, logger
from torchtitan.tools.utils import GarbageCollection

from fla.utils import IGNORE_INDEX
from flame import device
from flame.checkpoint import build_checkpointer, rng_state, set_rng_state
from flame.config import ConfigError, FlameConfigManager, JobConfig, shard_degree
from flame.context_parallel import ContextSplit, check_cp_supported, count_local_targets
from flame.metrics import MetricsProcessor, flops_per_token
from flame.model import build_model, count_params, load_model_config
from flame.parallelize import autocast, check_tp_supported, quiet_dtensor_logs
from flame.process_tree import (
    LAUNCHER_PID,
    Stopped,
    die_with_parent,
    report_to_launcher,
    stop_inside,
    stop_on_signals,
)
from flame.run_lock import RunLock
from flame.schedule import build_lr_schedulers
from flame.titan_internals import check_private_api

MODEL_INPUTS = ("cu_seqlens", "position_ids")  # passed to the model only when the batch has them

DataloaderFn = Callable[[JobConfig, int, int], Iterable[dict[str, torch.Tensor]]]
"""(job, dp_rank, dp_world_size) -> an iterable of batches (input_ids, labels, [cu_seqlens, position_ids])."""


class NonFiniteGradError(RuntimeError):
    """Raised when the gradient norm is NaN/Inf and the run may not (or may no longer) skip it."""


def build_data(job: JobConfig, dp_rank: int, dp_world_size: int, vocab_size: int | None = None):
    """flame's data pipeline: tokenizer from ``model.tokenizer_path``, then the stateful loader.

    Missing tokenizer or data, and a tokenizer larger than the model's vocabulary, are
    ConfigErrors (one line) raised before the model is built.
    """
    from flame.data import build_dataloader, build_tokenizer

    path = job.model.tokenizer_path
    if not path:
        raise ConfigError("model.tokenizer_path", path, "required to tokenize the data")
    try:
        tokenizer = build_tokenizer(path)
    except FileNotFoundError as err:
        raise ConfigError("model.tokenizer_path", path, str(err)) from None
    if vocab_size is not None and len(tokenizer) > vocab_size:
        why = f"its {len(tokenizer)} tokens do not fit the model's vocab_size {vocab_size} ({job.model.config})"
        raise ConfigError("model.tokenizer_path", path, why)
    t = job.training
    try:
        return build_dataloader(
            job.data,
            tokenizer,
            dp_rank=dp_rank,
            dp_world_size=dp_world_size,
            batch_size=t.batch_size,
            seq_len=t.seq_len,
            context_len=t.context_len,
            varlen=t.varlen,
        )
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError("data.dataset", job.data.dataset, str(err).splitlines()[0]) from None


def position_warning(model_config: Any, job: JobConfig) -> str | None:
    """A warning when the model uses RoPE and the longest attended span exceeds its ``max_position_embeddings``."""
    limit = getattr(model_config, "max_position_embeddings", None)
    attn = getattr(model_config, "attn", None)
    rope = getattr(model_config, "rope_theta", None) is not None or (
        isinstance(attn, dict) and attn.get("rope_theta", 10000.0) is not None
    )
    t = job.training
    span, key = (t.seq_len, "training.seq_len")
    if t.varlen and t.context_len:  # positions restart at every document
        span, key = (t.context_len, "training.context_len")
    if not rope or not limit or span <= limit:
        return None
    return (
        f"{key} = {span} exceeds max_position_embeddings = {limit} of {job.model.config}: RoPE positions past "
        f"{limit} were not seen by a model trained at that length (raise max_position_embeddings or lower {key})"
    )


def count_targets(labels: torch.Tensor) -> int:
    """Tokens that contribute to the loss: labels are shifted inside the model, so position 0 never does."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class Trainer(Stateful):
    """Builds everything from a JobConfig and runs the loop; ``state_dict`` is the train state."""

    def __init__(self, job: JobConfig, dataloader_fn: DataloaderFn | None = None):
        start_up()
        self.job = job
        t = job.training
        # The model config (and its TP support) is checked before the process group exists.
        self.model_config = load_model_config(job)
        check_tp_supported(self.model_config, job.parallelism.tensor_parallel_degree)
        check_cp_supported(self.model_config, job.parallelism.context_parallel_degree)
        if why := position_warning(self.model_config, job):
            logger.warning(why)

        ensure_launch_env()
        self.device = device.local_device()
        self.parallel_dims = pd = init_distributed(job)
        self.rank = dist.get_rank()
        take_run_lock(job, self.rank)
        job.maybe_log()
        if pd.dp_enabled:
            batch_mesh = pd.get_mesh("batch")
            self.dp_world_size, self.dp_rank = batch_mesh.size(), batch_mesh.get_local_rank()
        else:
            self.dp_world_size, self.dp_rank = 1, 0
        self.gc_handler = GarbageCollection(gc_freq=t.gc_freq)
        dist_utils.set_determinism(
            pd, self.device, tt.Debug(seed=t.seed, deterministic=t.deterministic), distinct_seed_mesh_dims=[]
        )

        if dataloader_fn is None:
            vocab = getattr(self.model_config, "vocab_size", None)
            self.dataloader = build_data(job, self.dp_rank, self.dp_world_size, vocab)
        else:
            self.dataloader = dataloader_fn(job, self.dp_rank, self.dp_world_size)

        # FSDP CPU offload keeps parameters on the host; buffers are used on the device.
        init_device = torch.device("cpu") if job.parallelism.enable_cpu_offload else self.device
        self.model = build_model(self.model_config, pd, job, init_device, buffer_device=self.device)
        self.autocast = autocast(pd, job)  # mixed precision of a plain one-rank model (FSDP does its own)
        self.cuda_graphs = t.compile and t.compile_mode == "reduce-overhead"
        n_params, n_emb = count_params(self.model)
        attn_len = t.context_len if (t.varlen and t.context_len) else t.seq_len
        self.flops_per_token = flops_per_token(self.model_config, n_params, n_emb, attn_len)

        self.optimizers = build_optimizers([self.model], job.optimizer, pd)
        self.lr_schedulers = build_lr_schedulers(self.optimizers, job.lr_scheduler, t.steps)  # re-fit on resume
        # tensor-parallel ranks share their tokens; context-parallel ranks count their own slices
        self.metrics = MetricsProcessor(job, self.flops_per_token, pd.tp, self.rank)
        self.loss_mesh = pd.get_optional_mesh("loss")
        self.cp_split = ContextSplit(pd.get_mesh("cp").get_group(), self.device) if pd.cp_enabled else None

        self.step = 0
        self.ntokens_seen = 0
        self.skipped_steps = 0
        self.nonfinite_in_a_row = 0
        self.checkpointer = build_checkpointer(
            job, self.model, self.optimizers, self.lr_schedulers, self.dataloader, train_state=self
        )
        logger.info(
            f"Trainer ready: {pd.world_size} rank(s) on {device.device_name()}, dp {self.dp_world_size} "
            f"(replicate {pd.dp_replicate} x shard {pd.dp_shard}), tp {pd.tp}, cp {pd.cp}; micro-batch "
            f"{t.batch_size} x {t.seq_len}, {t.gradient_accumulation_steps} micro-batch(es)/step, global batch "
            f"{t.batch_size * t.gradient_accumulation_steps * self.dp_world_size} sequences; {t.steps} steps"
        )

    # ------------------------------------------------------------------ checkpoint hooks

    def load_checkpoint(self) -> None:
        """Resume from the newest complete checkpoint (or ``checkpoint.load_step`` / ``initial_load_path``).

        Restores model, optimizer, lr schedule, this rank's data loader position and the
        train state. A run whose final model-only checkpoint exists is already finished.
        """
        load_step = self.job.checkpoint.load_step
        done = self.checkpointer.finished_step(self.job.training.steps) if load_step == -1 else None
        if done is not None:
            logger.info(f"Step {done} has its final model-only checkpoint: training is already finished")
            self.step = done
            return
        self.checkpointer.load(step=load_step)

    def save_checkpoint(self, step: int, last_step: bool) -> None:
        """Save every ``checkpoint.interval`` steps and at the last step (model-only if so configured)."""
        self.checkpointer.save(step, last_step=last_step)

    def state_dict(self) -> dict[str, Any]:
        # Each rank keeps its own RNG state under its own key (DCP keeps one copy of identical keys).
        return {
            "step": self.step,
            "ntokens_seen": self.ntokens_seen,
            "skipped_steps": self.skipped_steps,
            "rng": {f"rank_{self.rank}": rng_state()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = state_dict["step"]
        self.ntokens_seen = state_dict["ntokens_seen"]
        self.skipped_steps = state_dict.get("skipped_steps", 0)
        blob = state_dict.get("rng", {}).get(f"rank_{self.rank}")
        if blob is not None:
            set_rng_state(blob)

    # ------------------------------------------------------------------ one step

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The model's keywords for one micro-batch of the loader (host tensors): ``input_ids``, ``labels`` and
        :data:`MODEL_INPUTS`, or under context parallel this rank's slice (:class:`flame.context_parallel.ContextSplit`:
        ``shift_labels`` and ``cp_context`` instead of ``labels``)."""
        if self.cp_split is not None:
            return self.cp_split(batch)
        return {"input_ids": batch["input_ids"], "labels": batch["labels"]} | {
            k: batch[k] for k in MODEL_INPUTS if k in batch
        }

    @staticmethod
    def targets_of(inputs: dict[str, Any]) -> int:
        """Tokens of one micro-batch's inputs (:meth:`model_inputs`) that contribute to the loss (host count)."""
        if "shift_labels" in inputs:
            return count_local_targets(inputs["shift_labels"])
        return count_targets(inputs["labels"])

    def forward_backward(self, inputs: dict[str, Any], global_targets: float) -> torch.Tensor:
        """Backprop this micro-batch's loss scaled by its share of the global targets; returns its loss sum."""
        n_targets = self.targets_of(inputs)  # before the copy: on the host batch it needs no device sync
        inputs = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if self.cuda_graphs:  # a new iteration: the previous replays' outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast:
            loss = self.model(**inputs).loss
        # The model returns the mean over its targets; summed over micro-batches and ranks
        # this is the mean over the global batch (FSDP sums gradients, never averages).
        (loss * (n_targets / global_targets)).backward()
        return loss.detach().float() * n_targets

    def train_step(self, data_iterator: Iterator[dict[str, torch.Tensor]]) -> dict[str, float] | None:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches; metrics on log steps."""
        t = self.job.training
        self.optimizers.zero_grad()
        lr = self.lr_schedulers.schedulers[0].get_last_lr()[0]

        wait = time.perf_counter()
        batches = [self.model_inputs(next(data_iterator)) for _ in range(t.gradient_accumulation_steps)]
        wait = time.perf_counter() - wait
        local_targets = sum(self.targets_of(b) for b in batches)
        global_targets = dist_utils.dist_sum(
            torch.tensor(local_targets, dtype=torch.float64, device=self.device), self.loss_mesh
        )
        loss_sum = sum(self.forward_backward(b, global_targets) for b in batches)

        max_norm = t.max_norm if t.max_norm > 0 else float("inf")
        grad_norm = dist_utils.clip_grad_norm_(self.model.parameters(), max_norm, foreach=True).item()
        if _finite(grad_norm):
            self.checkpointer.maybe_wait_for_staging()  # an async save may still be copying the weights
            self.optimizers.step()
            self.nonfinite_in_a_row = 0
        else:
            self._on_nonfinite(grad_norm)
        self.lr_schedulers.step()

        tokens = sum(b["input_ids"].numel() for b in batches)
        self.ntokens_seen += tokens
        self.metrics.record(tokens, wait)
        if not self.metrics.should_log(self.step):
            return None
        loss_avg = dist_utils.dist_sum(loss_sum, self.loss_mesh) / global_targets
        loss_max = dist_utils.dist_max(loss_sum / max(local_targets, 1), self.loss_mesh)
        values = {"loss/avg": loss_avg, "loss/max": loss_max, "grad_norm": grad_norm, "lr": lr}
        values["tokens_seen"] = dist_utils.dist_sum(
            torch.tensor(self.ntokens_seen, dtype=torch.float64, device=self.device), self.loss_mesh
        )
        values["skipped_steps"] = self.skipped_steps
        return self.metrics.log(self.step, values)

    def _on_nonfinite(self, grad_norm: float) -> None:
        t = self.job.training
        if not t.skip_nan_inf:
            raise NonFiniteGradError(
                f"step {self.step}: gradient norm is {grad_norm}; set training.skip_nan_inf = true to skip such steps"
            )
        self.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        logger.warning(f"step {self.step}: gradient norm is {grad_norm}, update skipped ({self.skipped_steps} so far)")
        if self.nonfinite_in_a_row >= t.max_consecutive_nan_inf:
            raise NonFiniteGradError(
                f"step {self.step}: {self.nonfinite_in_a_row} steps in a row had a NaN/Inf gradient norm "
                f"(training.max_consecutive_nan_inf = {t.max_consecutive_nan_inf}); stopping"
            )

    # ------------------------------------------------------------------ loop

    def train(self) -> None:
        """Run until ``training.steps`` (or the data ends)."""
        job = self.job
        self.load_checkpoint()
        first_step = self.step + 1
        logger.info(
            f"Training starts at step {first_step}"
            if first_step <= job.training.steps
            else f"The run is already finished (step {self.step} of {job.training.steps}): nothing to train"
        )
        data_iterator = iter(self.dataloader)
        ran_out = False
        with device.maybe_enable_profiling(
            job.profiling, global_step=self.step, base_folder=job.job.dump_folder
        ) as prof:
            while self.step < job.training.steps:
                self.step += 1
                self.gc_handler.run(self.step)
                try:
                    self.train_step(data_iterator)
                except StopIteration:
                    logger.warning(f"Data ran out at step {self.step}; stopping")
                    self.step -= 1
                    ran_out = True
                    break
                self.save_checkpoint(self.step, last_step=self.step == job.training.steps)
                if prof:
                    prof.step()
                if self.step == first_step:
                    device.set_pg_timeouts(timedelta(seconds=job.comm.train_timeout_seconds), self.parallel_dims)
        if ran_out and self.step > 0 and self.step % job.checkpoint.interval != 0:
            self.save_checkpoint(self.step, last_step=True)  # the final model (an interval save already has it)
        logger.info(f"Training done: {self.step} steps, {self.skipped_steps} skipped")

    def close(self) -> None:
        """Wait for a pending checkpoint save, then close the metric backends."""
        if getattr(self, "checkpointer", None) is not None:
            self.checkpointer.close()
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()


def init_distributed(job: JobConfig) -> ParallelDims:
    """Start the process group (NCCL or gloo) and build torchtitan's device meshes for ``job``."""
    start_up()
    world_size = dist_utils.init_distributed(
        job.comm, enable_cpu_backend=job.parallelism.enable_cpu_offload, base_folder=job.job.dump_folder
    )
    p = job.parallelism
    parallel_dims = ParallelDims(
        dp_replicate=p.data_parallel_replicate_degree,
        dp_shard=shard_degree(job, world_size),
        cp=p.context_parallel_degree,
        tp=p.tensor_parallel_degree,
        pp=1,
        ep=1,
        etp=1,
        world_size=world_size,
    )
    parallel_dims.world_mesh  # noqa: B018 - builds the meshes
    return parallel_dims


_RUN_LOCK: RunLock | None = None


def take_run_lock(job: JobConfig, rank: int) -> None:
    """Global rank 0 locks ``job.dump_folder`` (:mod:`flame.run_lock`); if held, every rank raises one ConfigError."""
    global _RUN_LOCK
    refused = None
    if rank == 0:
        lock = RunLock(job.job.dump_folder)
        try:
            warning = lock.acquire()
            _RUN_LOCK = lock
            if warning:
                logger.warning(warning)
        except ConfigError as err:
            refused = (err.key, err.value, err.why)
    if dist.is_initialized() and dist.get_world_size() > 1:
        verdict = [refused]
        dist.broadcast_object_list(verdict, src=0)
        refused = verdict[0]
    if refused is not None:
        raise ConfigError(*refused)


def release_run_lock() -> None:
    global _RUN_LOCK
    if _RUN_LOCK is not None:
        _RUN_LOCK.release()
        _RUN_LOCK = None


def start_up() -> None:
    """What the trainer changes outside flame, applied when it starts (importing flame changes nothing).

    Checks that the torchtitan internals flame relies on are there (one error naming what is gone),
    points torchtitan's device globals at this machine's device, and quiets two known-noise messages
    (DTensor on CPU, 2-D reductions). Idempotent.
    """
    check_private_api()
    device.patch_torchtitan()
    quiet_dtensor_logs()


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


def ensure_launch_env() -> None:
    """Fill in torchrun's environment for a plain ``python -m flame.train`` (one process)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


def main(
    argv: list[str] | None = None, dataloader_fn: DataloaderFn | None = None, *, own_process: bool | None = None
) -> int:
    """Parse the config, train, shut down. Config errors print one line and return 2.

    ``own_process`` (default: when torchrun started this process) makes the process die with its
    launcher and turns SIGINT / SIGTERM / SIGHUP into a quiet stop (exit 128 + the signal).
    """
    init_logger()
    if own_process if own_process is not None else "TORCHELASTIC_RUN_ID" in os.environ:
        if "TORCHELASTIC_RUN_ID" in os.environ:
            die_with_parent()
        stop_on_signals()
    trainer = None
    finished = False
    try:
        job = FlameConfigManager().parse_args(argv)
        trainer = Trainer(job, dataloader_fn)
        trainer.train()
        finished = True
    except ConfigError as err:
        return _fail(f"flame: config error: {err}", 2)
    except NonFiniteGradError as err:
        return _fail(f"flame: stopped: {err}", 1)
    except BaseException as err:
        stop = stop_inside(err)  # also inside DCP's CheckpointException (a signal during a save)
        if stop is None:
            if isinstance(err, Exception):
                text = str(err).strip()
                report_to_launcher(f"flame: {type(err).__name__}: {text.splitlines()[0] if text else ''}")
            raise
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
        step = getattr(trainer, "step", None)
        if LAUNCHER_PID not in os.environ and int(os.environ.get("RANK", "0")) == 0:  # flame.launch says it there
            at = f" at step {step}" if step else ""
            print(f"flame: stopped by {signal.Signals(signum).name}{at}; the same command resumes from the newest "
                  f"complete checkpoint", file=sys.stderr)  # fmt: skip
        return 128 + signum
    finally:
        if trainer is not None:
            trainer.close()
        trainer = None  # free the model, optimizer and meshes while the process groups still exist
        release_run_lock()
        gc.collect()
        shutdown_distributed(wait_for_all=finished)
    return 0


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    report_to_launcher(line)
    return code


def shutdown_distributed(wait_for_all: bool) -> None:
    """Destroy the process group; after a normal run, first wait until every rank got here.

    Without the barrier a fast rank can close its gloo connections while a slower one still
    reads from them, which aborts the slower process (torchtitan sleeps on rank 0 instead).
    """
    if not dist.is_initialized():
        return
    if wait_for_all:
        device.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(own_process=True))
