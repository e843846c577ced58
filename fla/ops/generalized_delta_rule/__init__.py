"""Generalized delta rules (fla's package path): the DPLR (diagonal-plus-low-rank) transition, and IPLR
(identity-plus-low-rank: DPLR with no decay)."""

from fla.ops.generalized_delta_rule.dplr import (
    chunk_dplr_delta_rule,
    fused_recurrent_dplr_delta_rule,
    naive_chunk_dplr_delta_rule,
    naive_recurrent_dplr_delta_rule,
)
from fla.ops.generalized_delta_rule.iplr import chunk_iplr_delta_rule, fused_recurrent_iplr_delta_rule

__all__ = [
    "chunk_dplr_delta_rule",
    "fused_recurrent_dplr_delta_rule",
    "naive_chunk_dplr_delta_rule",
    "naive_recurrent_dplr_delta_rule",
]
__all__ += ["chunk_iplr_delta_rule", "fused_recurrent_iplr_delta_rule"]
