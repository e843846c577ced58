"""Lightning attention (fixed per-head decays from the layer index and the depth)."""

from fla.ops.lightning_attn.chunk import chunk_lightning_attn
from fla.ops.lightning_attn.decays import lightning_log_decays
from fla.ops.lightning_attn.fused_recurrent import fused_recurrent_lightning_attn
from fla.ops.lightning_attn.naive import naive_chunk_lightning_attn, naive_recurrent_lightning_attn

__all__ = [
    "chunk_lightning_attn",
    "fused_recurrent_lightning_attn",
    "lightning_log_decays",
    "naive_chunk_lightning_attn",
    "naive_recurrent_lightning_attn",
]
