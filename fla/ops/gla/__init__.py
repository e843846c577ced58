"""Gated linear attention (vector gates over the key dim)."""

from fla.ops.gla.chunk import chunk_gla
from fla.ops.gla.fused_chunk import fused_chunk_gla
from fla.ops.gla.fused_recurrent import fused_recurrent_gla
from fla.ops.gla.naive import naive_chunk_gla, naive_recurrent_gla

__all__ = ["chunk_gla", "fused_recurrent_gla", "naive_chunk_gla", "naive_recurrent_gla"]
__all__ += ["fused_chunk_gla"]
