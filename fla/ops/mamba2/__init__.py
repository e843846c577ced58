"""Mamba2's SSD (state-space duality) scan as scalar-decay linear attention (README.md has the maths)."""

from fla.ops.mamba2.chunk import chunk_mamba2_ssd
from fla.ops.mamba2.fused_recurrent import fused_recurrent_mamba2_ssd, mamba2_ssd_step
from fla.ops.mamba2.naive import naive_chunk_mamba2_ssd, naive_recurrent_mamba2_ssd

__all__ = [
    "chunk_mamba2_ssd",
    "fused_recurrent_mamba2_ssd",
    "mamba2_ssd_step",
    "naive_chunk_mamba2_ssd",
    "naive_recurrent_mamba2_ssd",
]
