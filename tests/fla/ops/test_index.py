"""cu_seqlens helpers: values, and the last-call cache that saves a device sync per layer."""

from __future__ import annotations

import pytest
import torch

from fla.ops.utils import prepare_chunk_indices, prepare_chunk_offsets, prepare_position_ids, prepare_sequence_ids
from fla.utils import check_cu_seqlens


def expected_chunks(lens: list[int], bt: int) -> list[list[int]]:
    return [[n, c] for n, length in enumerate(lens) for c in range(-(-length // bt))]


def test_helpers_match_a_loop():
    lens = [5, 1, 0, 130, 64]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    assert prepare_chunk_indices(cu, 64).tolist() == expected_chunks(lens, 64)
    assert prepare_chunk_offsets(cu, 64).tolist() == [0, 1, 2, 2, 5, 6]
    assert prepare_position_ids(cu).tolist() == [p for length in lens for p in range(length)]
    assert prepare_sequence_ids(cu).tolist() == [n for n, length in enumerate(lens) for _ in range(length)]


def test_cache_reuses_only_the_same_unmodified_tensor():
    cu = torch.tensor([0, 3, 70], dtype=torch.int64)
    first = prepare_chunk_indices(cu, 64)
    assert prepare_chunk_indices(cu, 64) is first  # same tensor, same args: no recompute
    assert prepare_chunk_indices(cu, 16).tolist() == expected_chunks([3, 67], 16)  # other args
    cu[2] = 200  # in place: the version counter moves, the cache must not answer
    assert prepare_chunk_indices(cu, 64).tolist() == expected_chunks([3, 197], 64)
    other = torch.tensor([0, 3, 70], dtype=torch.int64)  # equal values, another tensor
    assert prepare_chunk_indices(other, 64).tolist() == expected_chunks([3, 67], 64)


def test_checked_cu_seqlens_is_checked_again_after_a_change():
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    check_cu_seqlens(cu, total=9, batch=1)
    check_cu_seqlens(cu, total=9, batch=1)  # cached: fine
    with pytest.raises(ValueError, match="token count 10"):
        check_cu_seqlens(cu, total=10, batch=1)  # another total is a new check
    cu[1] = 12
    with pytest.raises(ValueError, match="non-decreasing"):
        check_cu_seqlens(cu, total=9, batch=1)
