"""Native sparse attention (NSA): compressed, selected and sliding-window attention mixed by gates."""

from fla.ops.nsa.naive import naive_nsa, naive_nsa_compression, naive_nsa_selection, naive_nsa_topk
from fla.ops.nsa.parallel import parallel_nsa, parallel_nsa_compression, parallel_nsa_topk

__all__ = [
    "naive_nsa",
    "naive_nsa_compression",
    "naive_nsa_selection",
    "naive_nsa_topk",
    "parallel_nsa",
    "parallel_nsa_compression",
    "parallel_nsa_topk",
]
