"""PaTH attention: softmax attention with Householder-product position encoding (and an optional forget gate)."""

from fla.ops.path_attn.naive import naive_path_attn, path_rank_one_update, path_transform_keys
from fla.ops.path_attn.parallel import parallel_path_attention, parallel_path_attn

__all__ = [
    "naive_path_attn",
    "parallel_path_attention",
    "parallel_path_attn",
    "path_rank_one_update",
    "path_transform_keys",
]
