"""Mamba's selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t . h_t + D x_t`` (see README.md)."""

from fla.ops.mamba.chunk import chunk_selective_scan
from fla.ops.mamba.fused_recurrent import fused_recurrent_selective_scan
from fla.ops.mamba.naive import naive_selective_scan
from fla.ops.mamba.selective_scan import selective_scan_fn, selective_state_update

__all__ = [
    "chunk_selective_scan",
    "fused_recurrent_selective_scan",
    "naive_selective_scan",
    "selective_scan_fn",
    "selective_state_update",
]
