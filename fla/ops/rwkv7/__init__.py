"""RWKV7 ("Goose") time mixing: the DPLR delta rule with RWKV7's names (:mod:`fla.ops.generalized_delta_rule`)."""

from fla.ops.rwkv7.chunk import chunk_rwkv7
from fla.ops.rwkv7.fused_recurrent import fused_mul_recurrent_rwkv7, fused_recurrent_rwkv7
from fla.ops.rwkv7.naive import naive_chunk_rwkv7, naive_recurrent_rwkv7

__all__ = [
    "chunk_rwkv7",
    "fused_mul_recurrent_rwkv7",
    "fused_recurrent_rwkv7",
    "naive_chunk_rwkv7",
    "naive_recurrent_rwkv7",
]
