"""Forgetting attention (FoX): softmax attention with a per-token, per-head log forget gate."""

from fla.ops.forgetting_attn.naive import naive_forgetting_attn
from fla.ops.forgetting_attn.parallel import parallel_forgetting_attn

__all__ = ["naive_forgetting_attn", "parallel_forgetting_attn"]
