"""Delta rule (DeltaNet): ``S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T``."""

from fla.ops.delta_rule.chunk import chunk_delta_rule
from fla.ops.delta_rule.fused_chunk import fused_chunk_delta_rule
from fla.ops.delta_rule.fused_recurrent import fused_recurrent_delta_rule
from fla.ops.delta_rule.naive import naive_chunk_delta_rule, naive_recurrent_delta_rule

__all__ = ["chunk_delta_rule", "fused_recurrent_delta_rule", "naive_chunk_delta_rule", "naive_recurrent_delta_rule"]
__all__ += ["fused_chunk_delta_rule"]
