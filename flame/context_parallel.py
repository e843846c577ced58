"""Context parallel in the trainer: each batch's sequences split along time over the ``cp`` mesh dimension.

The ``cp`` ranks of one data-parallel rank read the same batch (the loader is built per data-parallel rank) and
each keeps its slice of the time axis: ``input_ids``, ``position_ids`` and the targets, shifted on the whole
sequence first (``shift_labels``: the last token of a slice predicts the first of the next), and a
:class:`fla.context_parallel.CPContext` (the model's ``cp_context``) with the slice's local ``cu_seqlens`` when the
batch is packed. The loss sums over every rank's targets (the ``loss`` mesh includes ``cp``) and FSDP reduces the
gradients over ``dp_shard x cp``, so a step equals the same step without the split.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.context_parallel import CPContext
from fla.utils import IGNORE_INDEX
from flame.config import ConfigError

KEY = "parallelism.context_parallel_degree"


def check_cp_supported(model_config, degree: int) -> None:
    """ConfigError unless the model can run with its sequences split over ``degree`` ranks: an fla model whose every
    layer supports it (:func:`fla.models.modeling_utils.check_context_parallel`, on a meta-device copy)."""
    if degree == 1:
        return
    from transformers import AutoModelForCausalLM

    from fla.models.modeling_utils import FLAModel, check_context_parallel

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    base = getattr(model, "model", None)
    if not isinstance(base, FLAModel):
        raise ConfigError(KEY, degree, f"context parallel runs fla models; {type(model).__name__} is not one")
    try:
        check_context_parallel(base)
    except ValueError as err:
        raise ConfigError(KEY, degree, str(err)) from None


class ContextSplit:
    """This rank's slice of each batch (:meth:`__call__`) over the context-parallel process group ``group``."""

    def __init__(self, group: torch.distributed.ProcessGroup, device: torch.device):
        self.group, self.device = group, device
        self._dense: dict[int, CPContext] = {}

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | CPContext]:
        """``{input_ids, labels, [cu_seqlens, position_ids]}`` of the whole sequences (on the host) -> the model's
        keywords for this rank's slice: ``input_ids``, ``shift_labels``, ``cp_context`` (+ ``cu_seqlens``,
        ``position_ids``)."""
        ids = batch["input_ids"]
        if "cu_seqlens" in batch:
            ctx = CPContext.packed(self.group, batch["cu_seqlens"], device=self.device)
        else:
            ctx = self._dense.get(ids.shape[1]) or self._dense.setdefault(
                ids.shape[1], CPContext.dense(self.group, ids.shape[1])
            )
        shifted = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        out = {"input_ids": ctx.shard(ids), "shift_labels": ctx.shard(shifted), "cp_context": ctx}
        if "position_ids" in batch:
            out["position_ids"] = ctx.shard(batch["position_ids"])
        if ctx.cu_seqlens is not None:
            out["cu_seqlens"] = ctx.cu_seqlens
        return out


def count_local_targets(shift_labels: torch.Tensor) -> int:
    """Targets of this rank's slice (the shifted labels that are not ignored)."""
    return int((shift_labels != IGNORE_INDEX).sum())


__all__ = ["ContextSplit", "check_cp_supported", "count_local_targets"]
