"""ABC (attention with bounded-memory control): GSA without a forget gate (see README.md)."""

from fla.ops.abc.chunk import chunk_abc
from fla.ops.abc.fused_recurrent import fused_recurrent_abc
from fla.ops.abc.naive import naive_recurrent_abc, naive_softmax_abc

__all__ = ["chunk_abc", "fused_recurrent_abc", "naive_recurrent_abc", "naive_softmax_abc"]
