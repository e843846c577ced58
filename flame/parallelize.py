"""Parallelisms applied to a plain HF causal LM (on the meta device), torchtitan style.

Order (as in torchtitan): tensor parallel -> activation checkpointing -> per-block
``torch.compile`` -> FSDP2 / HSDP (each block, then the root; a one-rank run stays plain
under ``torch.autocast`` unless ``parallelism.one_rank_fsdp``). The model is found through
its block list (the ``nn.ModuleList`` named ``layers``); nothing here is model specific: the
tensor-parallel plan is the model's own (:func:`tensor_parallel_plan`).
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.distributed._functional_collectives as funcol
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torchtitan.config import job_config as tt
from torchtitan.distributed import ParallelDims
from torchtitan.tools.logging import logger

from fla.models.tp_plan import TPPlan, TPRegion
from fla.modules.gated_norm import FusedRMSNormGated
from fla.modules.norm import RMSNorm
from flame import device
from flame.config import ConfigError, JobConfig
from flame.metrics import causal_lm_class
from flame.titan_internals import apply_full_ac, apply_op_sac, dense_mesh

# ----------------------------------------------------------------------------- blocks


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of repeated blocks: the ``nn.ModuleList`` named ``layers`` (else the longest list)."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    named = [m for name, m in lists if name.split(".")[-1] == "layers"]
    if named:
        return named[0]
    if lists:
        return max(lists, key=lambda item: len(item[1]))[1]
    raise ValueError(f"{type(model).__name__} has no nn.ModuleList of blocks (expected one named 'layers')")


# ----------------------------------------------------------------------------- tensor parallel
#
# Megatron-style TP without sequence parallel. Inside a block, each "region" (attention,
# MLP) runs on local shards: column-parallel input projections (weights Shard(0)),
# row-parallel output projections (weights Shard(1)); the region's input goes through
# `_CopyToTP` (identity forward, all-reduce of the gradient) and its output through
# `_ReduceFromTP` (all-reduce forward, identity backward). The region's own code only
# ever sees plain tensors (its DTensor parameters are swapped for their local shards during
# its forward), so fused modules and Triton kernels work unchanged. Embedding and LM head
# are vocabulary-parallel DTensor modules with replicated outputs. A region's "shard" entries
# (short convolutions, per-head parameters) are split along dim 0 with the heads; every other
# parameter (norms) is a replicated DTensor used through its local value. A norm over all heads
# ("full_norms") becomes a `TPFullRMSNorm`: weight split with the heads, the mean square
# all-reduced over the group (the one collective inside a region).

# What to shard is the model's knowledge: fla models declare a ``tensor_parallel_plan``
# (fla.models.tp_plan.TPPlan); other transformers models are read from their config's generic
# ``base_model_tp_plan`` ("layers.*.<region>.<proj>": "colwise" / "rowwise").

_HF_STYLES = {"colwise": "col", "rowwise": "row"}


def tensor_parallel_plan(config) -> TPPlan | None:
    """The TP plan of ``config``'s causal LM: the one its class declares, else its ``base_model_tp_plan``
    translated (:func:`plan_from_base_model_tp_plan`); ``None`` when it has neither."""
    plan = getattr(causal_lm_class(config), "tensor_parallel_plan", None)
    return plan if plan is not None else plan_from_base_model_tp_plan(getattr(config, "base_model_tp_plan", None))


def plan_from_base_model_tp_plan(hf_plan: dict[str, str] | None) -> TPPlan | None:
    """transformers' ``{"layers.*.<region>.<proj>": "colwise" | "rowwise"}`` as a :class:`TPPlan`.

    Embedding and LM head are the model's input / output embeddings (left empty here, found on the
    model). ``None`` for styles flame does not implement, entries outside the blocks, or a region
    without a row-parallel projection.
    """
    if not hf_plan:
        return None
    regions: dict[str, dict[str, list[str]]] = {}
    for pattern, style in hf_plan.items():
        _, star, inner = pattern.partition(".*.")
        region, _, proj = inner.partition(".")
        if not star or not proj or style not in _HF_STYLES:
            return None
        regions.setdefault(region, {"col": [], "row": []})[_HF_STYLES[style]].append(proj)
    if any(not r["row"] for r in regions.values()):
        return None
    return TPPlan(
        embed="", head="", regions={n: TPRegion(col=tuple(r["col"]), row=tuple(r["row"])) for n, r in regions.items()}
    )


def check_tp_supported(config, tp_degree: int) -> None:
    """ConfigError unless ``config``'s model has a TP plan and its heads split over ``tp_degree`` ranks."""
    if tp_degree == 1:
        return
    key = "parallelism.tensor_parallel_degree"
    plan = tensor_parallel_plan(config)
    if plan is None:
        raise ConfigError(key, tp_degree, f"TP not supported for {config.model_type} (its model has no TP plan)")
    if getattr(config, "fuse_linear_cross_entropy", False):
        raise ConfigError(key, tp_degree, "TP needs the LM head's logits: set fuse_linear_cross_entropy = false")
    for field, value in plan.unsupported.items():
        if getattr(config, field, None) == value:
            raise ConfigError(key, tp_degree, f"TP for {config.model_type} does not support {field} = {value}")
    attn = getattr(config, "attn", None)
    if isinstance(attn, dict) and attn.get("layers"):
        raise ConfigError(key, tp_degree, f"TP does not support hybrid {config.model_type} models (attn layers)")
    for name in ("num_attention_heads", "num_heads", "num_key_value_heads", "num_kv_heads", "num_v_heads"):
        heads = getattr(config, name, None)
        if isinstance(heads, int) and heads % tp_degree != 0:
            raise ConfigError(key, tp_degree, f"{name} = {heads} of the model config is not divisible by it")


def materialized(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a plain tensor: functional collectives (and DTensor redistributions) return lazy
    ``AsyncCollectiveTensor`` wrappers that wait on the first torch op, but Triton kernels read
    ``data_ptr()`` without any torch op, i.e. a wrapper with no storage. ``clone`` waits, unwraps and
    keeps the autograd graph."""
    return t.clone() if isinstance(t, funcol.AsyncCollectiveTensor) else t


def _materialize_output(module: nn.Module, args, output):
    return materialized(output) if isinstance(output, torch.Tensor) else output


class _CopyToTP(torch.autograd.Function):
    """Identity forward; the gradient is summed over the TP group (each rank saw a slice)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return materialized(funcol.all_reduce(grad.contiguous(), "sum", ctx.group)), None


class _ReduceFromTP(torch.autograd.Function):
    """Sum of the ranks' partial outputs forward; identity backward (the output is replicated)."""

    @staticmethod
    def forward(ctx, x, group):
        return materialized(funcol.all_reduce(x.contiguous(), "sum", group))

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over the TP group forward; each rank's copy of the sum feeds only its own shard's maths, so the
    gradient is summed over the group too."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return materialized(funcol.all_reduce(x.contiguous(), "sum", group))

    @staticmethod
    def backward(ctx, grad):
        return materialized(funcol.all_reduce(grad.contiguous(), "sum", ctx.group)), None


def tp_rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    width: int,
    group,
    g: torch.Tensor | None = None,
    activation: str = "swish",
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """RMSNorm over a feature dim split over the TP group: ``x [..., width / tp]`` is this rank's share.

    ``(x / sqrt(mean(x_all^2) + eps) * weight + bias) * act(g)`` on the local features, the mean square
    over all ``width`` features from an all-reduce of the local sums of squares; float32 maths, output in
    ``x.dtype`` (as fla's fused norm). ``weight``, ``bias``, ``g``: this rank's shares (or ``None``).
    PyTorch, not the fused Triton kernel (which computes the RMS from its own row and cannot take it).
    """
    xf = x.float()
    mean_square = _AllReduceSum.apply(xf.square().sum(-1, keepdim=True), group) / width
    y = xf * torch.rsqrt(mean_square + eps)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    if g is not None:
        y = y * (torch.sigmoid(g.float()) if activation == "sigmoid" else F.silu(g.float()))
    return y.to(x.dtype)


class TPFullRMSNorm(nn.Module):
    """fla's ``RMSNorm`` / ``FusedRMSNormGated`` over a width split over the TP group (:func:`tp_rms_norm`).

    Takes over the norm's parameters (``weight``, ``bias``: same names, split with the heads by the
    caller) and calls: ``norm(x)``, or ``norm(x, g)`` for a gated one; no fused residual / prenorm.
    """

    def __init__(self, norm: nn.Module, group) -> None:
        super().__init__()
        if not isinstance(norm, (RMSNorm, FusedRMSNormGated)):
            raise TypeError(f"full-width TP norms are RMSNorm / FusedRMSNormGated, not {type(norm).__name__}")
        self.width, self.eps, self.group = norm.hidden_size, norm.eps, group
        self.gated = isinstance(norm, FusedRMSNormGated)
        self.activation = getattr(norm, "activation", None)
        self.weight, self.bias = norm.weight, norm.bias

    def reset_parameters(self) -> None:
        """``weight = 1``, ``bias = 0`` (the norm's init, which the model's ``_init_weights`` calls)."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.width} (split over the TP group), eps={self.eps}, activation={self.activation!r}"

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if (g is not None) != self.gated:
            raise TypeError(f"TPFullRMSNorm: a {'gated' if self.gated else 'plain'} norm called with g={g is not None}")
        return tp_rms_norm(x, self.weight, self.eps, self.width, self.group, g, self.activation or "swish", self.bias)


def apply_tp(model: nn.Module, tp_mesh: DeviceMesh, plan: TPPlan | None = None) -> None:
    """Shard the model per ``plan`` (default: :func:`tensor_parallel_plan` of its config); every other
    parameter becomes a replicated DTensor."""
    plan = plan if plan is not None else tensor_parallel_plan(model.config)
    name = type(model).__name__
    if plan is None:
        raise ConfigError("parallelism.tensor_parallel_degree", tp_mesh.size(), f"{name} has no TP plan")
    embed = plan.embed or _module_path(model, model.get_input_embeddings())
    head = plan.head or _module_path(model, model.get_output_embeddings())
    parallelize_module(
        model,
        tp_mesh,
        {
            embed: RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
            head: ColwiseParallel(output_layouts=Replicate()),
        },
    )
    for path in (embed, head):  # their outputs feed fused Triton ops (norm, cross-entropy)
        model.get_submodule(path).register_forward_hook(_materialize_output)
    for i, block in enumerate(find_blocks(model)):
        for region, spec in plan.regions.items():
            _shard_region(block, region, spec, tp_mesh, f"{name} block {i}")
    for _, module in model.named_modules():
        replicate_params(module, tp_mesh)
    logger.info(f"Applied tensor parallel (degree {tp_mesh.size()}) with {name}'s plan")


def _module_path(model: nn.Module, module: nn.Module | None) -> str:
    for path, candidate in model.named_modules():
        if candidate is module and module is not None:
            return path
    raise ValueError(f"{type(model).__name__}: its input / output embedding is not one of its modules")


def _shard_region(block: nn.Module, name: str, spec: TPRegion, mesh: DeviceMesh, where: str) -> None:
    """Shard one region's projections; hook its forward to run on local shards (see the section comment)."""

    def fail(why: str):
        raise ConfigError("parallelism.tensor_parallel_degree", mesh.size(), f"{where}: {why}")

    try:
        region = block.get_submodule(name)
    except AttributeError:
        fail(f"no module '{name}' for the TP plan")
    row_found = False
    for dim, names in ((0, spec.col), (1, spec.row)):
        for proj in names:
            try:
                linear = region.get_submodule(proj)
            except AttributeError:
                continue  # optional projections (e.g. an output gate) may be absent
            if not isinstance(linear, nn.Linear):
                fail(f"'{name}.{proj}' is not an nn.Linear")
            if dim == 1 and linear.bias is not None:
                fail(f"row-parallel '{name}.{proj}' has a bias (it would be added once per rank)")
            row_found |= dim == 1
            for pname, param in list(linear.named_parameters(recurse=False)):
                shard = distribute_tensor(param.data, mesh, [Shard(dim)], src_data_rank=None)
                linear._parameters[pname] = nn.Parameter(shard, requires_grad=param.requires_grad)
    if not row_found:
        fail(f"'{name}' has none of the row-parallel projections {', '.join(spec.row)}")
    for path in spec.shard:
        for module, pname in _params_at(region, path):
            param = module._parameters[pname]
            if param.shape[0] % mesh.size() != 0:
                fail(f"'{name}.{path}' has {param.shape[0]} rows, not divisible by the TP degree")
            shard = distribute_tensor(param.data, mesh, [Shard(0)], src_data_rank=None)
            module._parameters[pname] = nn.Parameter(shard, requires_grad=param.requires_grad)
    for path in spec.full_norms:  # norms over all heads: split with them, mean square all-reduced
        try:
            norm = region.get_submodule(path)
        except AttributeError:
            fail(f"no norm '{name}.{path}' for the TP plan's full_norms")
        if getattr(norm, "hidden_size", 0) % mesh.size() != 0:
            fail(f"'{name}.{path}' is {getattr(norm, 'hidden_size', '?')} wide, not divisible by the TP degree")
        try:
            tp_norm = TPFullRMSNorm(norm, mesh.get_group())
        except TypeError as e:
            fail(f"'{name}.{path}': {e}")
        for pname, param in list(tp_norm.named_parameters(recurse=False)):
            shard = distribute_tensor(param.data, mesh, [Shard(0)], src_data_rank=None)
            tp_norm._parameters[pname] = nn.Parameter(shard, requires_grad=param.requires_grad)
        parent, _, child = path.rpartition(".")
        setattr(region.get_submodule(parent) if parent else region, child, tp_norm)
    # Any other parameter of the region (norms over a head, low-rank gate inputs) is replicated;
    # each rank's gradient covers only its heads, so the gradients are summed over the group.
    owners = []
    for module in region.modules():
        for pname, param in list(module.named_parameters(recurse=False)):
            if not isinstance(param, DTensor):
                full = distribute_tensor(param.data, mesh, [Replicate()], src_data_rank=None)
                module._parameters[pname] = param = nn.Parameter(full, requires_grad=param.requires_grad)
            owners.append((module, pname, param.placements[0].is_replicate()))
    for attr in spec.divide:
        value = getattr(region, attr)
        if value % mesh.size() != 0:
            fail(f"'{name}.{attr}' = {value} is not divisible by the TP degree")
        setattr(region, attr, value // mesh.size())  # per-rank heads / widths
    for attr, per_rank in spec.rank_offset.items():  # e.g. this rank's first head
        setattr(region, attr, mesh.get_local_rank() * getattr(region, per_rank))
    group, rank, degree = mesh.get_group(), mesh.get_local_rank(), mesh.size()
    saved: list[nn.Parameter] = []

    def split(key, x):  # a replicated per-feature input: this rank's share (its gradient is summed by the copy)
        if key not in spec.split_inputs or not isinstance(x, torch.Tensor):
            return x
        if x.shape[-1] % degree != 0:
            raise ValueError(f"{where}: '{name}' input {key} is {x.shape[-1]} wide, not divisible by the TP degree")
        return x.chunk(degree, dim=-1)[rank]

    def enter(mod, args, kwargs):
        saved[:] = [m._parameters[n] for m, n, _ in owners]
        for (m, n, replicated), param in zip(owners, saved):
            local = param.to_local()
            m._parameters[n] = _CopyToTP.apply(local, group) if replicated else local
        copy = lambda x: _CopyToTP.apply(x, group) if _is_float(x) else x
        kwargs = {k: v if k in spec.local_inputs else split(k, copy(v)) for k, v in kwargs.items()}
        return tuple(copy(a) for a in args), kwargs

    def leave(mod, args, kwargs, output):
        for (m, n, _), param in zip(owners, saved):
            m._parameters[n] = param
        if isinstance(output, tuple):
            return (_ReduceFromTP.apply(output[0], group), *output[1:])
        return _ReduceFromTP.apply(output, group)

    region.register_forward_pre_hook(enter, with_kwargs=True)
    region.register_forward_hook(leave, with_kwargs=True)


def _params_at(region: nn.Module, path: str) -> list[tuple[nn.Module, str]]:
    """``(owner, name)`` of the parameters at ``path``: a submodule's own parameters, or one parameter.

    A missing path is skipped (optional parts such as the short convolutions may be absent).
    """
    try:
        module = region.get_submodule(path)
        return [(module, n) for n, _ in module.named_parameters(recurse=False)]
    except AttributeError:
        owner_path, _, pname = path.rpartition(".")
        owner = region.get_submodule(owner_path) if owner_path else region
        return [(owner, pname)] if pname in owner._parameters else []


def _is_float(x) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad


def replicate_params(module: nn.Module, mesh: DeviceMesh) -> None:
    """Make ``module``'s plain parameters replicated DTensors that its forward sees as plain tensors.

    The optimizer and the gradient norm then see one kind of parameter, while the module's
    code (fused norms taking a residual, Triton kernels) keeps working on local tensors: a
    forward pre-hook swaps each DTensor parameter for its differentiable ``to_local()`` view
    and a forward hook puts the parameter back. Activations around these modules are
    replicated over the TP ranks, so the local gradients are equal and stay ``Replicate``.
    """
    names = [n for n, p in module.named_parameters(recurse=False) if not isinstance(p, DTensor)]
    if not names:
        return
    for name in names:
        param = module._parameters[name]
        dparam = distribute_tensor(param.data, mesh, [Replicate()], src_data_rank=None)
        module._parameters[name] = nn.Parameter(dparam, requires_grad=param.requires_grad)
    saved: dict[str, nn.Parameter] = {}

    def to_local(mod, args):
        for name in names:
            saved[name] = mod._parameters[name]
            mod._parameters[name] = saved[name].to_local()

    def restore(mod, args, output):
        mod._parameters.update(saved)
        saved.clear()

    module.register_forward_pre_hook(to_local)
    module.register_forward_hook(restore, always_call=True)


# ----------------------------------------------------------------------------- AC, compile


def apply_ac(blocks: nn.ModuleList, mode: str, option: str, preserve_rng_state: bool = True) -> None:
    """Wrap blocks in activation checkpointing: ``full`` every block, ``selective`` every N-th or per op."""
    ac_config = tt.ActivationCheckpoint(mode=mode, selective_ac_option=option, preserve_rng_state=preserve_rng_state)
    for i, block in enumerate(blocks):
        if mode == "full" or (mode == "selective" and option.isdigit() and (i + 1) % int(option) == 0):
            blocks[i] = apply_full_ac(block, ac_config)
        elif mode == "selective" and option == "op":
            blocks[i] = apply_op_sac(block, ac_config)
    logger.info(f"Applied {mode} activation checkpointing ({option if mode == 'selective' else 'all blocks'})")


def apply_compile(blocks: nn.ModuleList, mode: str = "default") -> None:
    """``torch.compile`` each block in place (parameter names are unchanged) in ``mode``."""
    for block in blocks:
        block.compile(mode=None if mode == "default" else mode)
    logger.info(f"Compiling each of the {len(blocks)} blocks with torch.compile (mode {mode})")


# ----------------------------------------------------------------------------- FSDP


class _SequentialReduceFilter(logging.Filter):
    """Drops DTensor's hint that a 2-D reduction runs as two all-reduces.

    With HSDP or FSDP x TP the gradient norm (one scalar) is reduced over two mesh dims; the
    hint fires on every run and is noise (and over torchtitan's size-1 dims, a no-op).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "sequential" not in str(record.msg)


def quiet_dtensor_logs() -> None:
    """Install :class:`_SequentialReduceFilter` on DTensor's redistribution logger (once; the trainer calls it)."""
    log = logging.getLogger("torch.distributed.tensor._redistribute")
    if not any(isinstance(f, _SequentialReduceFilter) for f in log.filters):
        log.addFilter(_SequentialReduceFilter())


def data_parallel_mesh(parallel_dims: ParallelDims) -> DeviceMesh:
    """The mesh FSDP shards over: (replicate, shard) for HSDP, shard for FSDP, the world for one rank.

    With tensor parallel only, FSDP wraps over torchtitan's size-1 "fsdp" dimension (mixed
    precision and gradient reduction take the same path as with data parallel); a one-rank
    run wrapped anyway (``parallelism.one_rank_fsdp``) uses the size-1 world.
    """
    pd = parallel_dims
    if pd.world_size == 1:
        return pd.world_mesh
    if pd.dp_shard_enabled and not pd.dp_replicate_enabled:
        return pd.get_mesh("fsdp")
    pd.world_mesh  # noqa: B018 - builds the meshes
    # torchtitan's get_mesh hides size-1 dims; HSDP (R x 1) and TP-only still need them.
    dense = dense_mesh(pd)
    return dense["dp_replicate", "fsdp"] if pd.dp_replicate_enabled else dense["fsdp"]


def reshard_after_forward(policy: str, index: int, n_blocks: int, n_shards: int) -> bool:
    """Whether block ``index`` of ``n_blocks`` frees its unsharded parameters after forward.

    ``default``: every block but the last (FSDP would all-gather the last one again right away for
    backward), and none when the shard group has one rank: nothing is sharded there, resharding
    only frees the bf16 compute copy (2 bytes/parameter) and costs a re-cast and FSDP's per-parameter
    host work again in backward (GLA-340M on one H200: +0.6 GiB; 172 -> 148 ms/step in one A/B that was
    confounded with process order, see benchmarks/results/train_throughput.md).
    ``always`` / ``never``: every block.
    """
    if policy == "default":
        return n_shards > 1 and index < n_blocks - 1
    return policy == "always"


def apply_fsdp(
    model: nn.Module,
    blocks: nn.ModuleList,
    mesh: DeviceMesh,
    param_dtype: torch.dtype,
    reduce_dtype: torch.dtype,
    reshard_policy: str = "default",
    cpu_offload: bool = False,
) -> None:
    """FSDP2 on every block, then the root; which blocks reshard after forward: :func:`reshard_after_forward`."""
    kwargs = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype),
        "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    }
    for i, block in enumerate(blocks):
        # the shard group is the last mesh dim (HSDP: replicate x shard)
        reshard = reshard_after_forward(reshard_policy, i, len(blocks), mesh.size(mesh.ndim - 1))
        fully_shard(block, reshard_after_forward=reshard, **kwargs)
    fully_shard(model, **kwargs)
    device.fsdp_reduce_as_sum(model)
    kind = "HSDP" if mesh.ndim == 2 else "FSDP"
    logger.info(f"Applied {kind} over {mesh.size()} rank(s), params {param_dtype}, reduce {reduce_dtype}")


def uses_fsdp(parallel_dims: ParallelDims, job: JobConfig) -> bool:
    """Whether the model is wrapped in FSDP: always on more than one rank; on one rank only with
    ``parallelism.one_rank_fsdp`` or CPU offload (otherwise it trains plain, see :func:`autocast`)."""
    p = job.parallelism
    return parallel_dims.world_size > 1 or p.one_rank_fsdp or p.enable_cpu_offload


def autocast(parallel_dims: ParallelDims, job: JobConfig) -> contextlib.AbstractContextManager:
    """Mixed precision of the forward when FSDP does not provide it: ``torch.autocast`` to
    ``training.mixed_precision_param`` on a plain one-rank model (as torchtitan does), else a no-op."""
    dtype = device.param_dtype(job.training.mixed_precision_param)
    if uses_fsdp(parallel_dims, job) or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.DEVICE_TYPE, dtype=dtype)


def parallelize(model: nn.Module, parallel_dims: ParallelDims, job: JobConfig) -> nn.Module:
    """Apply TP, activation checkpointing, compile and FSDP/HSDP to ``model`` as ``job`` asks.

    A one-rank run stays a plain module with float32 parameters (see :func:`uses_fsdp`); its
    forward runs under :func:`autocast`.
    """
    blocks = find_blocks(model)
    if parallel_dims.tp_enabled:
        apply_tp(model, parallel_dims.get_mesh("tp"))
    ac = job.activation_checkpoint
    if ac.mode != "none":
        apply_ac(blocks, ac.mode, ac.selective_ac_option, ac.preserve_rng_state)
    if job.training.compile:
        apply_compile(blocks, job.training.compile_mode)
    if not uses_fsdp(parallel_dims, job):
        dtype = device.param_dtype(job.training.mixed_precision_param)
        precision = "float32" if dtype == torch.float32 else f"autocast {dtype}"
        logger.info(f"One rank: no FSDP wrapper, float32 parameters, {precision} forward")
        return model
    apply_fsdp(
        model,
        blocks,
        data_parallel_mesh(parallel_dims),
        device.param_dtype(job.training.mixed_precision_param),
        device.reduce_dtype(job.training.mixed_precision_reduce),
        job.parallelism.fsdp_reshard_after_forward,
        job.parallelism.enable_cpu_offload,
    )
    return model
