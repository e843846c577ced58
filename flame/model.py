"""Model build: HF config -> meta device -> parallelize -> materialize -> seeded init.

The initial weights depend only on the seed and the device type, never on the number of
ranks or the parallel layout: every rank draws each parameter's *full* tensor from one
seeded RNG stream, in module order, with the model's own HF ``_init_weights``; then each
rank keeps its own shard.
"""

from __future__ import annotations

import importlib
import json
import os

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor
from torchtitan.tools.logging import logger

from flame.checkpoint_folders import is_complete, is_hf_folder, step_folders
from flame.config import ConfigError, JobConfig, parse_model_overrides
from flame.paths import is_missing_local, missing


def import_custom_module(name: str) -> None:
    """Import ``model.custom_module`` (it registers AutoConfig / AutoModelForCausalLM classes)."""
    if not name:
        return
    try:
        importlib.import_module(name)
    except ImportError as err:
        raise ConfigError("model.custom_module", name, f"cannot import it ({err})") from None


def load_model_config(job: JobConfig):
    """The HF ``PretrainedConfig`` of ``model.config`` (after ``import fla`` and the custom module)."""
    from transformers import AutoConfig

    import fla  # noqa: F401 - registers fla's models with transformers' Auto classes

    import_custom_module(job.model.custom_module)
    path = job.model.config
    if is_missing_local(path):  # a typo in a local path fails now, not after the hub's retries
        raise ConfigError("model.config", path, missing(path))
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        why = "no such file or folder" if path.endswith(".json") and not os.path.exists(path) else str(err)
        raise ConfigError("model.config", path, why.splitlines()[0]) from None
    overrides = parse_model_overrides(job.model.overrides)
    if overrides.get("fuse_linear_cross_entropy") and "fuse_cross_entropy" not in overrides:
        overrides["fuse_cross_entropy"] = False  # the fused linear loss replaces it (a config may not set both)
    for key, value in overrides.items():
        if not hasattr(config, key):
            why = f"the {config.model_type} config ({path}) has no field {key!r}"
            raise ConfigError("model.overrides", f"{key}={json.dumps(value)}", why)
        setattr(config, key, value)
    check = getattr(config, "check_fields", None)  # fla configs: the checks run at construction, again here
    if check is not None and job.model.overrides:
        try:
            check()
        except ValueError as err:
            raise ConfigError("model.overrides", job.model.overrides, str(err).splitlines()[0]) from None
    config.use_cache = False
    check_weights_match(config, job)
    return config


def weights_to_load(job: JobConfig) -> tuple[str, str, str] | None:
    """``(config key, folder, "dcp" or "hf")`` of the weights the run loads first, or None (fresh init).

    The newest complete checkpoint of the run's folder (``checkpoint.load_step`` when set; a
    model-only final export past step 0 is not resumed from), else ``checkpoint.initial_load_path``.
    """
    c = job.checkpoint
    if not c.enable:
        return None
    from flame.checkpoint import is_model_only

    steps = step_folders(os.path.join(job.job.dump_folder, c.folder))
    complete = sorted((s for s, p in steps.items() if is_complete(p)), reverse=True)
    if c.load_step != -1:
        return ("checkpoint.load_step", steps[c.load_step], "dcp") if c.load_step in complete else None
    for step in complete:
        try:
            if step > 0 and is_model_only(steps[step]):
                continue
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is skipped (and reported) by the checkpointer
            continue
        return "model.config", steps[step], "dcp"
    if c.initial_load_path:
        path = c.initial_load_path
        return "checkpoint.initial_load_path", path, "hf" if is_hf_folder(path) else "dcp"
    return None


def check_weights_match(config, job: JobConfig) -> None:
    """The weights the run will load (:func:`weights_to_load`) have this model's names and shapes.

    Read from metadata only (DCP ``.metadata``, safetensors headers) against the model built on the
    meta device; a mismatch, or a safetensors shard missing from an HF folder, is a one-line
    ConfigError naming the folder, the first differing key and both shapes.
    """
    target = weights_to_load(job)
    if target is None:
        return
    key, path, kind = target
    from transformers import AutoModelForCausalLM

    from flame.convert.common import ConvertError, key_mismatch
    from flame.convert.dcp_to_hf import dcp_model_shapes
    from flame.convert.hf_to_dcp import _tied_output_names, hf_weight_shapes

    try:
        stored = hf_weight_shapes(path) if kind == "hf" else dcp_model_shapes(path)
    except ConvertError as err:
        raise ConfigError(key, path, str(err)) from None
    except Exception:  # noqa: BLE001 - unreadable metadata: the checkpointer skips or reports it
        return
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {name: list(t.shape) for name, t in model.state_dict().items()}
    tied = _tied_output_names(model)
    value = job.model.config if key == "model.config" else path
    hint = f"model.config ({job.model.config}) describes another architecture than {path}"
    missing_keys = sorted(k for k in expected if k not in stored and k not in tied)
    unexpected = sorted(k for k in stored if k not in expected)
    if missing_keys or unexpected:
        raise ConfigError(
            key, value, key_mismatch(f"{path} does not match the model", missing_keys, unexpected, hint, 3)
        )
    for name, shape in sorted(stored.items()):
        if shape != expected[name]:
            why = f"{name} has shape {shape} in {path} but {expected[name]} in the model; {hint}"
            raise ConfigError(key, value, why)


def build_model(
    config, parallel_dims, job: JobConfig, init_device: torch.device, buffer_device: torch.device | None = None
) -> nn.Module:
    """Build the causal LM of ``config`` on meta, parallelize it, materialize it on ``init_device``, init it.

    Buffers end on ``buffer_device`` (default ``init_device``; differs with FSDP CPU offload).
    """
    from transformers import AutoModelForCausalLM

    from flame.parallelize import parallelize

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = parallelize(model, parallel_dims, job)
    model.to_empty(device=init_device)
    retie_embeddings(model)
    init_weights(model, job.training.seed, init_device)
    if buffer_device is not None and buffer_device != init_device:
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(buffer_device)
    model.train()
    return model


def retie_embeddings(model: nn.Module) -> None:
    """Re-tie input and output embeddings if the config ties them and materializing broke the tie."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if inp is None or out is None or inp.weight is out.weight:
        return
    out.weight = inp.weight


@torch.no_grad()
def init_weights(model: nn.Module, seed: int, device: torch.device) -> None:
    """Initialize every parameter and buffer with the model's HF ``_init_weights``, identically on all ranks.

    Modules are visited in HF order (children before parents, each sub-model with its own
    ``_init_weights``). Each direct parameter is temporarily swapped for a full-size tensor
    on ``device`` (NaN-filled), initialized, checked, and the rank's shard copied into the
    real (possibly DTensor) parameter. Float buffers (e.g. rotary ``inv_freq``) are
    recomputed in place. A parameter or buffer the model's init leaves NaN is an error.
    """
    from transformers import PreTrainedModel

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        _init_subtree(model, model._init_weights, device, PreTrainedModel)


def _init_subtree(module: nn.Module, init_fn, device: torch.device, pretrained_cls, prefix: str = "") -> None:
    for name, child in module.named_children():
        child_init = child._init_weights if isinstance(child, pretrained_cls) else init_fn
        _init_subtree(child, child_init, device, pretrained_cls, f"{prefix}{name}.")
    _init_module(module, init_fn, device, prefix)


def _init_module(module: nn.Module, init_fn, device: torch.device, prefix: str) -> None:
    params = dict(module.named_parameters(recurse=False))
    buffers = {n: b for n, b in module.named_buffers(recurse=False) if b.is_floating_point()}
    # A module's init may also set parameters of its submodules (HF calls it after theirs: a layer's
    # reset_parameters, or the model's _init_weights for that layer, giving a child Linear its bias, say): their
    # sharded parameters are lent to it as full tensors too (in practice a layer's, never the whole model's: the
    # model and block containers hold no parameters of their own)
    own = bool(params or buffers)
    below = _sharded_below(module) if own or hasattr(module, "reset_parameters") else []
    if not own and not below:
        return
    real = {}
    for name, param in params.items():
        real[name] = param
        full = torch.full(param.shape, float("nan"), dtype=param.dtype, device=device)
        module._parameters[name] = nn.Parameter(full, requires_grad=param.requires_grad)
    for buffer in buffers.values():
        buffer.fill_(float("nan"))
    for owner, name, param in below:
        owner._parameters[name] = nn.Parameter(param.full_tensor(), requires_grad=param.requires_grad)
    try:
        init_fn(module)
    finally:
        inits = {name: module._parameters[name].data for name in real}
        module._parameters.update(real)
        lent = [(owner._parameters[name].data, param) for owner, name, param in below]
        for owner, name, param in below:
            owner._parameters[name] = param
    for name, param in real.items():
        _check_initialized(f"{prefix}{name}", inits[name], module)
        _store(param, inits[name])
    for value, param in lent:
        _store(param, value)
    for name, buffer in buffers.items():
        _check_initialized(f"{prefix}{name}", buffer, module)


def _sharded_below(module: nn.Module) -> list[tuple[nn.Module, str, DTensor]]:
    """``(owner, name, parameter)`` of every DTensor parameter of ``module``'s submodules (not its own)."""
    return [
        (owner, name, param)
        for owner in module.modules()
        if owner is not module
        for name, param in owner._parameters.items()
        if isinstance(param, DTensor)
    ]


def _store(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the full ``value`` into ``param``: this rank's shard of it when ``param`` is a DTensor."""
    if isinstance(param, DTensor):
        shard = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(value)


def _check_initialized(name: str, tensor: torch.Tensor, module: nn.Module) -> None:
    if torch.isnan(tensor).any():
        raise RuntimeError(
            f"{name} ({type(module).__name__}) is not initialized by the model's _init_weights; "
            "flame initializes models with HF semantics only"
        )


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, embedding parameters) of the full model, shared parameters counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = model.get_input_embeddings()
    n_emb = emb.weight.numel() if emb is not None else 0
    logger.info(f"Model has {total:,} parameters ({n_emb:,} in the input embedding)")
    return total, n_emb
