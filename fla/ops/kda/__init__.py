"""KDA (Kimi Delta Attention): the delta rule with a per-key-channel decay,
``S_t = (I - beta_t k_t k_t^T) diag(exp(g_t)) S_{t-1} + beta_t k_t v_t^T``."""

from fla.ops.kda.chunk import chunk_kda
from fla.ops.kda.fused_recurrent import fused_recurrent_kda
from fla.ops.kda.gate import kda_gate
from fla.ops.kda.naive import naive_chunk_kda, naive_recurrent_kda

__all__ = ["chunk_kda", "fused_recurrent_kda", "kda_gate", "naive_chunk_kda", "naive_recurrent_kda"]
