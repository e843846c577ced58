"""RWKV6 (Finch): vector-gated linear attention whose output reads the state before each token, plus a bonus."""

from fla.ops.rwkv6.chunk import chunk_rwkv6
from fla.ops.rwkv6.fused_recurrent import fused_recurrent_rwkv6
from fla.ops.rwkv6.naive import naive_chunk_rwkv6, naive_recurrent_rwkv6

__all__ = ["chunk_rwkv6", "fused_recurrent_rwkv6", "naive_chunk_rwkv6", "naive_recurrent_rwkv6"]
