"""Causal softmax attention (flash-style Triton kernels): GQA, varlen, sliding window, forget gate, decoding."""

from fla.ops.attn.decoding import attn_decoding_one_step
from fla.ops.attn.naive import naive_attn_decoding, naive_parallel_attn
from fla.ops.attn.parallel import parallel_attn

__all__ = ["attn_decoding_one_step", "naive_attn_decoding", "naive_parallel_attn", "parallel_attn"]
