"""Gated Slot Attention: two passes of gated linear attention over M slots (see README.md)."""

from fla.ops.gsa.chunk import chunk_gsa
from fla.ops.gsa.fused_recurrent import fused_recurrent_gsa
from fla.ops.gsa.gate import additive_gate
from fla.ops.gsa.naive import naive_chunk_gsa, naive_recurrent_gsa

__all__ = ["additive_gate", "chunk_gsa", "fused_recurrent_gsa", "naive_chunk_gsa", "naive_recurrent_gsa"]
