"""Comba: a gated delta rule whose erase key ``p`` differs from the write key ``k`` and reads the state
before the token's decay (https://arxiv.org/abs/2506.02475)."""

from fla.ops.comba.chunk import chunk_comba
from fla.ops.comba.fused_recurrent import fused_recurrent_comba
from fla.ops.comba.naive import naive_chunk_comba, naive_recurrent_comba

__all__ = ["chunk_comba", "fused_recurrent_comba", "naive_chunk_comba", "naive_recurrent_comba"]
