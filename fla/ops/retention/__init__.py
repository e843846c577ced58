"""RetNet retention (fixed per-head decays)."""

from fla.ops.retention.chunk import chunk_retention
from fla.ops.retention.decays import retention_log_decays
from fla.ops.retention.fused_recurrent import fused_recurrent_retention
from fla.ops.retention.naive import naive_chunk_retention, naive_recurrent_retention

__all__ = [
    "chunk_retention",
    "fused_recurrent_retention",
    "naive_chunk_retention",
    "naive_recurrent_retention",
    "retention_log_decays",
]
