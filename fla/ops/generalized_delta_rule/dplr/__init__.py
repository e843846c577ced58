"""DPLR delta rule: a state transition ``diag(exp(gk_t)) + b_t a_t^T`` per token (RWKV7's time mixing)."""

from fla.ops.generalized_delta_rule.dplr.chunk import chunk_dplr_delta_rule
from fla.ops.generalized_delta_rule.dplr.fused_recurrent import fused_recurrent_dplr_delta_rule
from fla.ops.generalized_delta_rule.dplr.naive import naive_chunk_dplr_delta_rule, naive_recurrent_dplr_delta_rule

__all__ = [
    "chunk_dplr_delta_rule",
    "fused_recurrent_dplr_delta_rule",
    "naive_chunk_dplr_delta_rule",
    "naive_recurrent_dplr_delta_rule",
]
