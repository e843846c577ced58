"""Index helpers for varlen batches and the dispatch rule re-exported for ops."""

from fla.ops.utils.index import (
    prepare_chunk_indices,
    prepare_chunk_offsets,
    prepare_lens,
    prepare_position_ids,
    prepare_sequence_ids,
)
from fla.ops.utils.varlen import pad_sequences, per_sequence, unpad_sequences
from fla.utils.backend import force_backend, select_backend

__all__ = [
    "force_backend",
    "pad_sequences",
    "per_sequence",
    "prepare_chunk_indices",
    "prepare_chunk_offsets",
    "prepare_lens",
    "prepare_position_ids",
    "prepare_sequence_ids",
    "select_backend",
    "unpad_sequences",
]
