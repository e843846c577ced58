"""Padding mask -> varlen helpers and position-id offsets."""

import pytest
import torch

from fla.layers.utils import (
    check_attention_mask,
    decode_offsets,
    get_padding_info,
    has_padding,
    offsets_from_position_ids,
    repad,
    unpad,
)


def test_unpad_repad_round_trip_and_memo():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0]])
    info = get_padding_info(mask)
    assert info is get_padding_info(mask), "computed once per mask object"
    assert info.cu_seqlens.tolist() == [0, 2, 5, 5] and info.max_seqlen == 3 and info.cu_seqlens.dtype == torch.int32
    x = torch.randn(3, 4, 5, requires_grad=True)
    packed = unpad(x, info)
    assert torch.equal(packed, x[mask.bool()])
    back = repad(packed, info)
    assert torch.equal(back, x * mask[..., None])
    (dx,) = torch.autograd.grad(back.sum(), x)
    assert torch.equal(dx, mask[..., None].float().expand_as(x))
    # the last columns only (new tokens after cached ones)
    assert get_padding_info(mask, 2).cu_seqlens.tolist() == [0, 2, 3, 3]
    assert has_padding(mask) and not has_padding(torch.ones(2, 3))


def test_offsets():
    assert offsets_from_position_ids(torch.arange(3, 8)[None], 2, 5) == 3
    rows = offsets_from_position_ids(torch.stack([torch.arange(5), torch.arange(5) + 4]), 2, 5)
    assert rows.tolist() == [0, 4]
    with pytest.raises(ValueError, match="consecutive within each row"):
        offsets_from_position_ids(torch.tensor([[0, 1, 0]]), 1, 3)
    with pytest.raises(ValueError, match=r"position_ids has shape \[1, 4\], expected \[1, 3\]"):
        offsets_from_position_ids(torch.arange(4)[None], 1, 3)
    offsets, top = decode_offsets(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), 1)
    assert offsets.tolist() == [2, 3] and top == 3
    with pytest.raises(ValueError, match="new tokens must not be padding"):
        decode_offsets(torch.tensor([[1, 1, 0]]), 1)


def test_mask_checks():
    check_attention_mask(torch.ones(2, 5), 2, 5)
    with pytest.raises(ValueError, match="arbitrary"):
        check_attention_mask(torch.ones(2, 1, 5, 5), 2, 5)
    with pytest.raises(ValueError, match="additive float masks"):
        check_attention_mask(torch.full((2, 5), -1e9), 2, 5)
    with pytest.raises(ValueError, match=r"unpad: x has shape \[2, 4, 1\], expected \[3, 4, ...\]"):
        unpad(torch.zeros(2, 4, 1), get_padding_info(torch.ones(3, 4)))
