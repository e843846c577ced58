"""``NormParallel``: fla 0.6.0's tensor-parallel style for a norm layer under sequence parallelism.

A norm works on each token alone, so under sequence parallelism it needs no communication: its weight (and bias)
are replicated over the mesh and its input is sharded along the sequence. That is torch's
:class:`~torch.distributed.tensor.parallel.SequenceParallel`, which this class is, under fla's name and keywords
(``sequence_dim``, ``use_local_output``): a plain tensor input is taken as this rank's shard of the sequence, a
DTensor input is redistributed to that sharding first, the output is a DTensor sharded the same way (its local
shard with ``use_local_output=True``).

    parallelize_module(model, tp_mesh, {"model.norm": NormParallel()})
"""

from __future__ import annotations

from torch.distributed.tensor.parallel import SequenceParallel


class NormParallel(SequenceParallel):
    """Replicated parameters, input and output sharded on ``sequence_dim`` (module docstring).

    Args:
        sequence_dim: the sequence dimension of the norm's input and output (default 1: ``[B, T, D]``).
        use_local_output: return the output's local shard instead of the DTensor.
    """

    def __init__(self, *, sequence_dim: int = 1, use_local_output: bool = False):
        super().__init__(sequence_dim=sequence_dim, use_local_output=use_local_output)


__all__ = ["NormParallel"]
