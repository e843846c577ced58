"""Generalized delta rules (fla's package path): the DPLR (diagonal-plus-low-rank) transition."""

from fla.ops.generalized_delta_rule.dplr import (
    chunk_dplr_delta_rule,
    fused_recurrent_dplr_delta_rule,
    naive_chunk_dplr_delta_rule,
    naive_recurrent_dplr_delta_rule,
)

__all__ = [
    "chunk_dplr_delta_rule",
    "fused_recurrent_dplr_delta_rule",
    "naive_chunk_dplr_delta_rule",
    "naive_recurrent_dplr_delta_rule",
]
