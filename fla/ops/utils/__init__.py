"""Index helpers for varlen batches, the dispatch rule re-exported for ops, and fla 0.6.0's utility ops.

* :mod:`.index` cu_seqlens / mask -> lengths, chunk and token indices; :mod:`.varlen` packed <-> padded batches
* :mod:`.cumsum` fla's ``chunk_local_cumsum`` / ``chunk_global_cumsum`` (adapters onto ``fla.ops.common.cumsum``)
* :mod:`.chunked` ``mean_pooling``, ``solve_tril``; :mod:`.tensor_ops` ``logsumexp_fwd``, ``softmax_fwd/bwd``,
  ``matmul``, ``addmm``, ``sinkhorn``, ``softplus`` (PyTorch forms of fla's Triton kernels);
  :mod:`.block_csr` ``prepare_block_csr`` (block selection -> CSR, for sparse attention backward passes)
"""

from fla.ops.utils.block_csr import prepare_block_csr
from fla.ops.utils.chunked import mean_pooling, solve_tril
from fla.ops.utils.cumsum import (
    chunk_global_cumsum,
    chunk_global_cumsum_scalar,
    chunk_global_cumsum_vector,
    chunk_local_cumsum,
    chunk_local_cumsum_scalar,
    chunk_local_cumsum_vector,
)
from fla.ops.utils.index import (
    get_max_num_splits,
    prepare_chunk_indices,
    prepare_chunk_indices_static,
    prepare_chunk_offsets,
    prepare_cu_seqlens_from_lens,
    prepare_cu_seqlens_from_mask,
    prepare_lens,
    prepare_lens_from_mask,
    prepare_position_ids,
    prepare_sequence_ids,
    prepare_token_indices,
)
from fla.ops.utils.tensor_ops import addmm, logsumexp_fwd, matmul, sinkhorn, softmax_bwd, softmax_fwd, softplus
from fla.ops.utils.varlen import pack_sequence, pad_sequences, per_sequence, unpack_sequence, unpad_sequences
from fla.utils.backend import force_backend, select_backend

__all__ = [
    "addmm",
    "chunk_global_cumsum",
    "chunk_global_cumsum_scalar",
    "chunk_global_cumsum_vector",
    "chunk_local_cumsum",
    "chunk_local_cumsum_scalar",
    "chunk_local_cumsum_vector",
    "force_backend",
    "get_max_num_splits",
    "logsumexp_fwd",
    "matmul",
    "mean_pooling",
    "pack_sequence",
    "pad_sequences",
    "per_sequence",
    "prepare_block_csr",
    "prepare_chunk_indices",
    "prepare_chunk_indices_static",
    "prepare_chunk_offsets",
    "prepare_cu_seqlens_from_lens",
    "prepare_cu_seqlens_from_mask",
    "prepare_lens",
    "prepare_lens_from_mask",
    "prepare_position_ids",
    "prepare_sequence_ids",
    "prepare_token_indices",
    "select_backend",
    "sinkhorn",
    "softmax_bwd",
    "softmax_fwd",
    "softplus",
    "solve_tril",
    "unpack_sequence",
    "unpad_sequences",
]
