"""Tensor-parallel plans: what a model family declares so a trainer can shard it (Megatron style).

In the spirit of transformers' ``base_model_tp_plan``, a model class states *which* of its modules
are column- or row-parallel; the trainer (flame's ``parallelize``) owns *how*. A block is split into
regions (its token mixer, its MLP): each region's input projections are column-parallel (output
features split over the ranks), its output projection is row-parallel (input features split, the
partial outputs summed), and the region's code then runs on each rank's share of the heads.

Declared on the model class (``tensor_parallel_plan``, ``None``: no tensor parallelism)::

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings", head="lm_head",
        regions={"attn": TPRegion(col=("q_proj", ...), row=("o_proj",), ...), "mlp": MLP_REGION},
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SHORT_CONVS = ("q_conv1d", "k_conv1d", "v_conv1d")
"""fla's depthwise short convolutions: they follow their column-parallel projection (channels split)."""

MIXER_DIMS = ("key_dim", "value_dim", "key_dim_per_group", "value_dim_per_group")
"""Widths of fla's linear-attention layers that become per-rank widths."""


@dataclass(frozen=True)
class TPRegion:
    """One region of a block (a submodule whose forward runs on the rank's shards).

    Args:
        col: column-parallel ``nn.Linear`` paths inside the region (weights split along dim 0);
            absent ones (optional gates) are skipped.
        row: row-parallel ``nn.Linear`` paths (weights split along dim 1, no bias); at least one
            must exist.
        shard: other parameters split along dim 0 with the heads: a submodule's own parameters
            (short convolutions) or one parameter (``A_log``); absent ones are skipped.
        divide: integer attributes of the region divided by the degree (per-rank heads / widths).
        rank_offset: ``{attr: per_rank_attr}``: ``attr`` becomes ``rank * per_rank_attr`` (e.g.
            the index of this rank's first head, for head-dependent constants).
        full_norms: RMSNorms (fla's ``RMSNorm`` or ``FusedRMSNormGated``) over the region's whole split
            width, i.e. over all heads at once (HGRN's, LightNet's output norm): their weight is split with
            the heads and, inside the region, the mean square sums every rank's share (an all-reduce of the
            local sum of squares) before each rank normalizes and gates its own features.
        split_inputs: keyword inputs of the region's forward that are replicated per-feature tensors
            ``[..., width]`` of the split width (HGRN's ``lower_bound``): each rank gets its contiguous share
            of the last dim, as the column-parallel projections do; their gradients are summed over the group.
        local_inputs: keyword inputs that are already this rank's share: an output of an earlier region past
            its first (RWKV7's ``v_first``, layer 0's values of this rank's heads). They enter as they are, and
            their gradients stay per rank.
    """

    col: tuple[str, ...]
    row: tuple[str, ...]
    shard: tuple[str, ...] = ()
    divide: tuple[str, ...] = ()
    rank_offset: Mapping[str, str] = field(default_factory=dict)
    full_norms: tuple[str, ...] = ()
    split_inputs: tuple[str, ...] = ()
    local_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TPPlan:
    """A causal LM's tensor-parallel plan.

    Args:
        embed: path of the input embedding (vocabulary-parallel, replicated output).
        head: path of the LM head (column-parallel, replicated logits).
        regions: ``{submodule of each block: TPRegion}``.
        unsupported: ``{config field: value}`` combinations the plan cannot shard.
    """

    embed: str
    head: str
    regions: Mapping[str, TPRegion]
    unsupported: Mapping[str, Any] = field(default_factory=dict)


MLP_REGION = TPRegion(col=("gate_proj", "up_proj"), row=("down_proj",))
"""The SwiGLU MLP of every fla block."""


def linear_mixer_plan(
    col: tuple[str, ...],
    shard: tuple[str, ...] = SHORT_CONVS,
    heads: tuple[str, ...] = ("num_heads", "num_kv_heads"),
    widths: tuple[str, ...] = (),
    rank_offset: Mapping[str, str] | None = None,
    full_norms: tuple[str, ...] = (),
    split_inputs: tuple[str, ...] = (),
) -> TPPlan:
    """The plan of an fla model whose blocks hold a linear-attention layer ``attn`` and the MLP.

    ``col`` are the layer's input projections (``o_proj`` is the row-parallel output), ``shard`` its
    per-channel / per-head parameters, ``heads`` its head counts and ``widths`` its other widths (divided
    by the degree, together with :data:`MIXER_DIMS`); ``full_norms``, ``split_inputs``: as in :class:`TPRegion`.
    """
    attn = TPRegion(
        col=col,
        row=("o_proj",),
        shard=shard,
        divide=(*heads, *MIXER_DIMS, *widths),
        rank_offset=dict(rank_offset or {}),
        full_norms=full_norms,
        split_inputs=split_inputs,
    )
    return TPPlan(embed="model.embeddings", head="lm_head", regions={"attn": attn, "mlp": MLP_REGION})


__all__ = ["MIXER_DIMS", "MLP_REGION", "SHORT_CONVS", "TPPlan", "TPRegion", "linear_mixer_plan"]
