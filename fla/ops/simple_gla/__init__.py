"""Simple GLA: scalar per-head gates (per token and/or a constant decay)."""

from fla.ops.simple_gla.chunk import chunk_simple_gla
from fla.ops.simple_gla.fused_chunk import fused_chunk_simple_gla
from fla.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla
from fla.ops.simple_gla.naive import naive_chunk_simple_gla, naive_recurrent_simple_gla
from fla.ops.simple_gla.parallel import parallel_simple_gla

__all__ = ["chunk_simple_gla", "fused_recurrent_simple_gla", "naive_chunk_simple_gla", "naive_recurrent_simple_gla"]
__all__ += ["fused_chunk_simple_gla", "parallel_simple_gla"]
