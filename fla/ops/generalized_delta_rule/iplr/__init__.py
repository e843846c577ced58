"""IPLR (identity-plus-low-rank) delta rule: the DPLR transition with no decay."""

from fla.ops.generalized_delta_rule.iplr.chunk import chunk_iplr_delta_rule
from fla.ops.generalized_delta_rule.iplr.fused_recurrent import fused_recurrent_iplr_delta_rule

__all__ = ["chunk_iplr_delta_rule", "fused_recurrent_iplr_delta_rule"]
