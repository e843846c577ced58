"""Based (Arora et al. 2024): linear attention with the second-order Taylor map of exp."""

from fla.ops.based.fused_chunk import fused_chunk_based
from fla.ops.based.naive import naive_parallel_based
from fla.ops.based.parallel import parallel_based

__all__ = ["fused_chunk_based", "naive_parallel_based", "parallel_based"]
