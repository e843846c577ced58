"""flame's JobConfig: TOML presets + ``--section.key value`` overrides, validated up front.

Precedence: command line > TOML file (``--job.config_file``) > defaults. Sections reuse
torchtitan 0.2.2's dataclasses where flame means the same thing (``job``, ``checkpoint``,
``metrics``, ``comm``, ``profiling``, ``optimizer``) and define their own where flame's
keys differ (``model``, ``training``, ``lr_scheduler``, ``parallelism``,
``activation_checkpoint``); ``data`` is :class:`flame.data.DataConfig`.

Every mistake (unknown key, wrong type, impossible combination) raises
:class:`ConfigError` before any model is built, with one line that names the TOML file or
the command line, the key, the value and why.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import re
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from torchtitan.config import job_config as tt
from torchtitan.config.manager import ConfigManager

from flame.checkpoint_folders import is_complete, is_hf_folder
from flame.data import DataConfig

CLI = "command line"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ConfigError(ValueError):
    """A bad configuration: one line naming where (file / command line), the key, the value and why."""

    def __init__(self, key: str, value: Any, why: str, where: str | None = None):
        self.key, self.value, self.why, self.where = key, value, why, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key} = {_show(value)}: {why}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return "none" if value is None else str(value)


# ----------------------------------------------------------------------------- sections


@dataclass
class Model:
    config: str = ""
    """HF model config: a .json file, a folder with config.json, or a hub id (offline cache only)."""

    tokenizer_path: str = ""
    """Tokenizer folder (or hub id) for ``flame.data.build_tokenizer``."""

    custom_module: str = ""
    """Python module imported before the config is read (registers more AutoModelForCausalLM classes)."""

    overrides: list[str] = field(default_factory=list)
    """Model config fields to change, as ``key=value`` (JSON values: true, 2, 0.02, "x"), e.g.
    ``fuse_linear_cross_entropy=true``; each key must already exist in the model config."""


@dataclass
class Optimizer(tt.Optimizer):
    name: Literal["AdamW", "Adam"] = "AdamW"
    """Optimizer: AdamW or Adam (torchtitan's build_optimizers)."""


@dataclass
class LRScheduler:
    warmup_steps: int = 200
    """Linear warmup steps (clamped to the total steps)."""

    decay_ratio: float | None = None
    """Fraction of the steps spent decaying (warmup-stable-decay); none = decay right after warmup."""

    decay_type: Literal["linear", "sqrt", "cosine"] = "linear"
    """Shape of the decay."""

    lr_min: float = 0.0
    """Final learning rate as a ratio of optimizer.lr."""

    total_steps: int | None = None
    """Steps the schedule spans; none = training.steps. Changed on resume (or training.steps): the lr stays
    continuous, the decay is re-fit from the resume step's lr to lr_min at the new end (flame/schedule.py)."""

    def to_torchtitan(self) -> tt.LRScheduler:
        """The equivalent torchtitan section (``lr_min`` is its ``min_lr_factor``)."""
        return tt.LRScheduler(
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            decay_ratio=self.decay_ratio,
            decay_type=self.decay_type,
            min_lr_factor=self.lr_min,
        )


@dataclass
class Training:
    batch_size: int = 8
    """Sequences per micro-batch per data-parallel rank (1 with varlen)."""

    seq_len: int = 2048
    """Tokens per sequence (with varlen: tokens per packed micro-batch)."""

    context_len: int | None = None
    """Longest document piece in varlen packing; none = seq_len."""

    varlen: bool = False
    """Pack documents into one row with cu_seqlens instead of fixed-length rows."""

    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""

    steps: int = 10000
    """Optimizer steps to train. May change on resume: the lr schedule is re-fit, continuous at the resume step."""

    max_norm: float = 1.0
    """Gradient clipping norm (<= 0: no clipping, the norm is still logged)."""

    skip_nan_inf: bool = False
    """Skip (and count) steps whose gradient norm is NaN/Inf instead of stopping."""

    max_consecutive_nan_inf: int = 10
    """With skip_nan_inf: stop after this many NaN/Inf steps in a row."""

    mixed_precision_param: Literal["bfloat16", "float32"] = "bfloat16"
    """Compute dtype: of FSDP's parameter copies, or of ``torch.autocast`` on a plain one-rank run
    (see parallelism.one_rank_fsdp); always float32 on CPU."""

    mixed_precision_reduce: Literal["float32"] = "float32"
    """Gradient reduction dtype under FSDP."""

    compile: bool = False
    """torch.compile each block."""

    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    """torch.compile mode of the blocks (reduce-overhead: CUDA graphs, one-rank plain runs on CUDA only).
    reduce-overhead replays each block's forward and backward as CUDA graphs, with no per-kernel host
    cost; FSDP's hooks cannot be captured, hence one rank without the wrapper."""

    seed: int = 42
    """Seed for weight init and every RNG."""

    deterministic: bool = False
    """torch.use_deterministic_algorithms (slower)."""

    gc_freq: int = 50
    """Python garbage collection every N steps."""


@dataclass
class Parallelism:
    data_parallel_replicate_degree: int = 1
    """Replicas (HSDP's outer dimension); 1 = off."""

    data_parallel_shard_degree: int = -1
    """FSDP shards; -1 = the ranks left after replicate and tensor parallel."""

    tensor_parallel_degree: int = 1
    """Tensor parallel degree (by the model's own TP plan: fla models' or base_model_tp_plan); 1 = off."""

    context_parallel_degree: int = 1
    """Context parallel: each sequence split along time over this many ranks (fla models whose layers support it;
    FSDP shards over data parallel x this); 1 = off."""

    fsdp_reshard_after_forward: Literal["default", "always", "never"] = "default"
    """default: reshard every block but the last after forward (none on a 1-rank shard group); always / never."""

    enable_cpu_offload: bool = False
    """FSDP CPU offload of parameters, gradients and optimizer states (GPU only)."""

    one_rank_fsdp: bool = False
    """Wrap a one-rank run in FSDP too (default: a plain model under torch.autocast, as torchtitan does).
    The wrapper gives bf16 parameter copies as on many ranks; the plain model is faster (no per-parameter
    FSDP hooks). CPU offload always uses FSDP."""


@dataclass
class ActivationCheckpoint:
    mode: Literal["none", "full", "selective"] = "none"
    """none, full (every block), or selective (see selective_ac_option)."""

    selective_ac_option: str = "2"
    """selective: an integer N (checkpoint every N-th block) or 'op' (torchtitan's per-op policy)."""

    preserve_rng_state: bool = True
    """Replay RNG state in recomputation (needed for bitwise-equal dropout)."""


@dataclass
class Metrics(tt.Metrics):
    log_freq: int = 10
    """Log every N steps (and the first and the last step)."""

    enable_jsonl: bool = True
    """Write every logged step as one JSON line to <dump_folder>/metrics.jsonl (rank 0)."""

    wandb_project: str = "flame"
    """wandb project (WANDB_PROJECT overrides it)."""

    wandb_mode: Literal["online", "offline"] = "online"
    """wandb mode: offline writes the run locally (``wandb sync`` later)."""


@dataclass
class JobConfig:
    """The whole training job: one attribute per TOML section."""

    job: tt.Job = field(default_factory=tt.Job)
    model: Model = field(default_factory=Model)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    training: Training = field(default_factory=Training)
    parallelism: Parallelism = field(default_factory=Parallelism)
    activation_checkpoint: ActivationCheckpoint = field(default_factory=ActivationCheckpoint)
    checkpoint: tt.Checkpoint = field(default_factory=tt.Checkpoint)
    data: DataConfig = field(default_factory=DataConfig)
    metrics: Metrics = field(default_factory=Metrics)
    comm: tt.Comm = field(default_factory=tt.Comm)
    profiling: tt.Profiling = field(default_factory=tt.Profiling)

    to_dict = tt.JobConfig.to_dict
    maybe_log = tt.JobConfig.maybe_log


# ----------------------------------------------------------------------------- parsing


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` (a TOML value, or a string from the command line) as type ``tp``; ConfigError if it is not."""
    from_cli = where == CLI
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    if tp is Any:
        return value
    if origin is Literal:
        for choice in args:
            if value == choice or (from_cli and str(choice) == value):
                return choice
        raise ConfigError(key, value, f"expected one of {', '.join(_show(a) for a in args)}", where)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if value is None or (from_cli and isinstance(value, str) and value.lower() in ("none", "null")):
            if len(members) < len(args):
                return None
        errors = []
        for member in members:
            try:
                return _coerce(value, member, key, where)
            except ConfigError as err:
                errors.append(err.why)
        raise ConfigError(key, value, " or ".join(errors), where)
    if origin in (list, tuple):
        item = args[0] if args else Any
        if from_cli and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, "expected a list", where)
        return [_coerce(v, item, key, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_cli and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(key, value, "expected true or false", where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_cli and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(key, value, "expected an integer", where)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_cli and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, value, "expected a number", where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "expected a string", where)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(key, value, f"[{key}] is a section, not a value", where)
    return value


def _unknown_key(cls: type, prefix: str, path: list[str], value: Any, where: str) -> ConfigError:
    name = path[len(prefix.split(".")) - 1] if prefix else path[0]
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid: {', '.join(prefix + n for n in names)}"
    kind = f"section '{name}'" if not prefix else "key"
    return ConfigError(".".join(path), value, f"unknown {kind}; {hint}", where)


def _set(obj: Any, path: list[str], value: Any, where: str, sources: dict[str, str]) -> None:
    """Set ``obj.<path>`` to ``value`` (coerced to the field's type); record where it came from."""
    prefix = ""
    for i, name in enumerate(path):
        cls = type(obj)
        fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields_by_name:
            raise _unknown_key(cls, prefix, path, value, where)
        tp = _type_hints(cls)[name]
        key = prefix + name
        if i == len(path) - 1:
            if dataclasses.is_dataclass(tp):
                raise ConfigError(key, value, f"[{key}] is a section, not a value", where)
            setattr(obj, name, _coerce(value, tp, key, where))
            sources[key] = where
            return
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(key + "." + ".".join(path[i + 1 :]), value, f"'{key}' is a value, not a section", where)
        obj = getattr(obj, name)
        prefix = key + "."


def _flatten(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    out = []
    for k, v in table.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, prefix + (k,)))
        else:
            out.append((list(prefix + (k,)), v))
    return out


def parse_cli(args: list[str]) -> list[tuple[list[str], str | None]]:
    """``--a.b value`` / ``--a.b=value`` / bare ``--a.b`` (a flag) into (path, raw value or None)."""
    out: list[tuple[list[str], str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(arg, None, "unexpected argument; options look like --section.key value", CLI)
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is not None and not nxt.startswith("--"):
                raw, i = nxt, i + 1
            else:
                raw = None
        path = [p.replace("-", "_") for p in key.split(".")]
        if len(path) < 2 or not all(path):
            raise ConfigError(key, raw, "expected --section.key", CLI)
        out.append((path, raw))
        i += 1
    return out


class FlameConfigManager(ConfigManager):
    """torchtitan's ConfigManager with flame's sections, strict TOML and one-line errors.

    torchtitan parses the command line with tyro, whose errors are multi-line boxes and
    whose booleans are ``--x/--no-x`` flags; flame parses ``--section.key value`` itself so
    every error is one line and ``--training.compile false`` works. torchtitan's
    ``job.custom_config_module`` merging is kept.
    """

    def __init__(self, config_cls: type = JobConfig):
        super().__init__(config_cls)
        self.sources: dict[str, str] = {}

    def parse_args(self, args: list[str] | None = None, world_size: int | None = None) -> JobConfig:
        """Parse ``args`` (default ``sys.argv[1:]``) and validate for ``world_size`` ranks (default $WORLD_SIZE)."""
        args = list(sys.argv[1:] if args is None else args)
        if "--help" in args or "-h" in args:
            print(help_text(self.config_cls))
            raise SystemExit(0)
        overrides = parse_cli(args)
        toml_values = self._maybe_load_toml(args) or {}
        config_cls = self._maybe_add_custom_config(args, toml_values)
        self.sources = {}
        config = config_cls()
        where = self.toml_path or "toml"
        for path, value in _flatten(toml_values):
            _set(config, path, value, where, self.sources)
        for path, raw in overrides:
            _set(config, path, True if raw is None else raw, CLI, self.sources)
        if self.toml_path:
            config.job.config_file = self.toml_path
        self.config = config
        if world_size is None:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        validate(config, world_size, self.sources)
        return config

    def _maybe_load_toml(self, args: list[str]) -> dict[str, Any] | None:
        self.toml_path = None
        for path, raw in parse_cli(args):
            if path == ["job", "config_file"]:
                self.toml_path = raw
        if self.toml_path is None:
            return None
        try:
            with open(self.toml_path, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("job.config_file", self.toml_path, "no such file", CLI) from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError("job.config_file", self.toml_path, f"not valid TOML ({err})", CLI) from None


def help_text(config_cls: type = JobConfig) -> str:
    """Every section and key with its type and default, for ``--help``."""
    lines = ["usage: python -m flame.train --job.config_file FILE.toml [--section.key value ...]", ""]
    root = config_cls()
    for section in dataclasses.fields(config_cls):
        lines.append(f"[{section.name}]")
        obj = getattr(root, section.name)
        hints = _type_hints(type(obj))
        for f in dataclasses.fields(obj):
            tp = hints[f.name]
            tp = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
            lines.append(f"  --{section.name}.{f.name} = {_show(getattr(obj, f.name))}    ({tp})")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- validation


def validate(config: JobConfig, world_size: int, sources: dict[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` for the first impossible setting or combination."""
    sources = sources or {}

    def fail(key: str, why: str) -> typing.NoReturn:
        section, name = key.split(".", 1)
        raise ConfigError(key, getattr(getattr(config, section), name), why, sources.get(key, "default"))

    t, p, lr, opt = config.training, config.parallelism, config.lr_scheduler, config.optimizer
    for key in ("training.batch_size", "training.seq_len", "training.steps", "training.gradient_accumulation_steps"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            fail(key, "must be >= 1")
    if t.context_len is not None and not 1 <= t.context_len <= t.seq_len:
        fail("training.context_len", f"must be between 1 and training.seq_len ({t.seq_len})")
    if t.varlen and t.batch_size != 1:
        fail("training.batch_size", "training.varlen = true packs documents into one row: batch_size must be 1")
    if t.max_consecutive_nan_inf < 1:
        fail("training.max_consecutive_nan_inf", "must be >= 1")
    if t.gc_freq < 1:
        fail("training.gc_freq", "must be >= 1")

    _validate_degrees(config, world_size, fail)
    if p.enable_cpu_offload and not _has_cuda():
        fail("parallelism.enable_cpu_offload", "CPU offload needs a CUDA device (this run is on CPU)")
    if t.compile_mode != "default" and not t.compile:
        fail("training.compile_mode", "is a torch.compile setting: set training.compile = true too")
    if t.compile_mode == "reduce-overhead":
        if not _has_cuda():
            fail("training.compile_mode", "CUDA graphs need a CUDA device (this run is on CPU)")
        if world_size > 1 or p.one_rank_fsdp or p.enable_cpu_offload:
            fail("training.compile_mode", "CUDA graphs need a one-rank run without FSDP (its hooks cannot be captured)")

    if lr.warmup_steps < 0:
        fail("lr_scheduler.warmup_steps", "must be >= 0")
    if lr.decay_ratio is not None and not 0.0 <= lr.decay_ratio <= 1.0:
        fail("lr_scheduler.decay_ratio", "must be between 0 and 1")
    if not 0.0 <= lr.lr_min <= 1.0:
        fail("lr_scheduler.lr_min", "is a ratio of optimizer.lr: must be between 0 and 1")
    if lr.total_steps is not None and lr.total_steps < 1:
        fail("lr_scheduler.total_steps", "must be >= 1")
    if opt.lr <= 0:
        fail("optimizer.lr", "must be > 0")
    if opt.eps <= 0:
        fail("optimizer.eps", "must be > 0")
    if opt.weight_decay < 0:
        fail("optimizer.weight_decay", "must be >= 0")
    if opt.early_step_in_backward:
        fail("optimizer.early_step_in_backward", "not supported: flame clips gradients and accumulates micro-batches")

    ac = config.activation_checkpoint
    if ac.mode == "selective" and ac.selective_ac_option != "op":
        if not (ac.selective_ac_option.isdigit() and int(ac.selective_ac_option) >= 1):
            fail("activation_checkpoint.selective_ac_option", "expected a positive integer N (every N-th) or 'op'")

    m = config.metrics
    if m.log_freq < 1:
        fail("metrics.log_freq", "must be >= 1")
    if m.enable_wandb and importlib.util.find_spec("wandb") is None:
        fail("metrics.enable_wandb", "wandb is not installed (pip install 'flame[wandb]')")
    if m.enable_tensorboard and importlib.util.find_spec("tensorboard") is None:
        fail("metrics.enable_tensorboard", "tensorboard is not installed (pip install 'flame[tensorboard]')")
    _validate_checkpoint(config, fail)
    prof = config.profiling
    if prof.enable_profiling and prof.profile_freq < prof.profiler_warmup + prof.profiler_active:
        fail("profiling.profile_freq", "must be >= profiling.profiler_warmup + profiling.profiler_active")
    if config.comm.mode != "default":
        fail("comm.mode", "only 'default' is supported by flame")
    _model_config_from_hf_folder(config, fail)
    if not config.model.config:
        fail("model.config", "required: a model config .json, a folder with config.json, or a hub id")
    try:
        parse_model_overrides(config.model.overrides)
    except ValueError as err:
        fail("model.overrides", str(err))
    _validate_data(config, sources)


def _model_type(path: str) -> str | None:
    """``model_type`` of a local config .json (or a folder's config.json); None when there is none to read."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file) as f:
            value = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _model_config_from_hf_folder(config: JobConfig, fail) -> None:
    """An HF folder as ``checkpoint.initial_load_path``: its config.json is the model config when none is
    given; a given one must be of the same model family."""
    path = config.checkpoint.initial_load_path
    if not (config.checkpoint.enable and path and is_hf_folder(path)):
        return
    folder_type = _model_type(path)
    if not config.model.config:
        if folder_type is not None:
            config.model.config = path
        return
    given = _model_type(config.model.config)
    if folder_type is not None and given is not None and folder_type != given:
        fail(
            "checkpoint.initial_load_path",
            f"holds a {folder_type} model ({path}/config.json) but model.config ({config.model.config}) is a "
            f"{given} model; leave model.config out to use the folder's config, or give a {folder_type} config",
        )


def parse_model_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}``, each value read as JSON when it parses, else kept as a string.

    Raises ValueError naming the item that is not ``key=value`` or repeats a key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{item!r} is not key=value (e.g. fuse_linear_cross_entropy=true)")
        if key in out:
            raise ValueError(f"{key!r} is given twice")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw.strip()
    return out


CHECKPOINT_GROUPS = ("model", "optimizer", "lr_scheduler", "dataloader", "train_state")


def _validate_checkpoint(config: JobConfig, fail) -> None:
    """The ``[checkpoint]`` keys flame supports (torchtitan's section; flame.checkpoint uses it)."""
    c = config.checkpoint
    if c.interval < 1:
        fail("checkpoint.interval", "must be >= 1")
    if c.keep_latest_k < 0 or c.keep_latest_k == 1:
        fail("checkpoint.keep_latest_k", "0 keeps all; otherwise >= 2 (the newest may still be being written)")
    if c.load_step < -1:
        fail("checkpoint.load_step", "-1 (the newest complete checkpoint) or a step >= 0")
    if not c.folder.strip():
        fail("checkpoint.folder", "must name a folder (inside job.dump_folder unless absolute)")
    if c.async_mode == "async_with_pinned_mem" and not _has_cuda():
        fail("checkpoint.async_mode", "pinned-memory staging needs a CUDA device (use 'async' or 'disabled' on CPU)")
    for group in c.exclude_from_loading:
        if group not in CHECKPOINT_GROUPS:
            fail("checkpoint.exclude_from_loading", f"{group!r} is not one of {', '.join(CHECKPOINT_GROUPS)}")
    for key, why in (
        ("initial_load_in_hf", "point checkpoint.initial_load_path at the HF folder (detected by its *.safetensors)"),
        ("last_save_in_hf", "export with python -m flame.convert.dcp_to_hf"),
        ("create_seed_checkpoint", "write a seed with python -m flame.convert.hf_to_dcp"),
    ):
        if getattr(c, key):
            fail(f"checkpoint.{key}", f"not supported by flame; {why}")
    if c.initial_load_path:
        if not c.enable:
            fail("checkpoint.initial_load_path", "needs checkpoint.enable = true")
        path = c.initial_load_path
        if not (is_complete(path) or is_hf_folder(path)):
            why = "no such folder" if not os.path.isdir(path) else "no .metadata (DCP) and no *.safetensors (HF) in it"
            fail("checkpoint.initial_load_path", f"{why}; give a DCP step folder or an HF model folder")


def _validate_data(config: JobConfig, sources: dict[str, str]) -> None:
    """``DataConfig.validate()`` (its one-line ValueError names the data key) as a ConfigError."""
    check = getattr(config.data, "validate", None)
    if check is None:
        return
    try:
        check()
    except ValueError as err:
        msg = str(err)
        named = re.search(r"data\.(\w+)", msg)
        key = named.group(0) if named and hasattr(config.data, named.group(1)) else "data"
        value = getattr(config.data, named.group(1)) if key != "data" else None
        raise ConfigError(key, value, msg, sources.get(key, "default")) from None


def _validate_degrees(config: JobConfig, world_size: int, fail) -> None:
    p = config.parallelism
    rep, shard, tp = p.data_parallel_replicate_degree, p.data_parallel_shard_degree, p.tensor_parallel_degree
    cp = p.context_parallel_degree
    if rep < 1:
        fail("parallelism.data_parallel_replicate_degree", "must be >= 1")
    if tp < 1:
        fail("parallelism.tensor_parallel_degree", "must be >= 1")
    if cp < 1:
        fail("parallelism.context_parallel_degree", "must be >= 1")
    if shard == 0 or shard < -1:
        fail("parallelism.data_parallel_shard_degree", "must be -1 (use the ranks left) or >= 1")
    if shard == -1:
        if world_size % (rep * tp * cp) != 0:
            key = ("parallelism.context_parallel_degree" if cp > 1 else "parallelism.tensor_parallel_degree"
                   if tp > 1 else "parallelism.data_parallel_replicate_degree")  # fmt: skip
            fail(key, f"replicate ({rep}) x tensor parallel ({tp}) x context parallel ({cp}) does not divide the "
                      f"world size {world_size}")  # fmt: skip
    elif rep * shard * tp * cp != world_size:
        fail(
            "parallelism.data_parallel_shard_degree",
            f"replicate ({rep}) x shard ({shard}) x tensor parallel ({tp}) x context parallel ({cp}) = "
            f"{rep * shard * tp * cp} != world size {world_size}",
        )
    if cp > 1:
        t = config.training
        if t.seq_len % cp != 0:
            fail("parallelism.context_parallel_degree", f"does not divide training.seq_len ({t.seq_len})")
        if t.compile:
            fail("parallelism.context_parallel_degree", "is not supported with training.compile = true")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def shard_degree(config: JobConfig, world_size: int) -> int:
    """``data_parallel_shard_degree`` with -1 resolved against ``world_size``."""
    p = config.parallelism
    if p.data_parallel_shard_degree != -1:
        return p.data_parallel_shard_degree
    return world_size // (p.data_parallel_replicate_degree * p.tensor_parallel_degree * p.context_parallel_degree)


def dumps(config: JobConfig) -> str:
    """The config as indented JSON (for logs)."""
    return json.dumps(dataclasses.asdict(config), indent=2, default=str)
