"""LightNet attention (GLA with keys and decays from a running log-sum-exp of the key logits)."""

from fla.ops.lightnet.chunk import chunk_lightnet
from fla.ops.lightnet.fused_recurrent import fused_recurrent_lightnet
from fla.ops.lightnet.gate import lightnet_gates
from fla.ops.lightnet.naive import naive_chunk_lightnet, naive_recurrent_lightnet

__all__ = [
    "chunk_lightnet",
    "fused_recurrent_lightnet",
    "lightnet_gates",
    "naive_chunk_lightnet",
    "naive_recurrent_lightnet",
]
