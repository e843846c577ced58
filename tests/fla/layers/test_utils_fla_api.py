"""fla 0.6.0's (FlashAttention-style) padding helpers and cache accessors in fla.layers.utils, against
references written here from their definitions."""

from __future__ import annotations

import pytest
import torch

from fla.layers.utils import (
    IndexFirstAxis,
    IndexPutFirstAxis,
    get_layer_cache,
    get_unpad_data,
    get_unpad_indices_and_cu,
    index_first_axis,
    index_put_first_axis,
    pad_input,
    prepare_cu_seqlens_from_lens,
    prepare_cu_seqlens_from_mask,
    prepare_lens_from_mask,
    repad_hidden_states,
    require_cache_layer_idx,
    unpad_hidden_states,
    unpad_input,
    update_layer_cache,
)
from fla.models.cache import FLACache

# row 0 left padding, row 1 right padding, row 2 none, row 3 a single token
MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])


def kept(mask: torch.Tensor) -> list[tuple[int, int]]:
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


@pytest.mark.parametrize("as_bool", [False, True])
def test_get_unpad_data(as_bool):
    mask = MASK.bool() if as_bool else MASK
    indices, cu, max_len = get_unpad_data(mask)
    assert indices.tolist() == [b * 5 + t for b, t in kept(MASK)]
    assert cu.tolist() == [0, 3, 5, 10, 11] and cu.dtype == torch.int32 and max_len == 5
    assert prepare_lens_from_mask(mask).tolist() == [3, 2, 5, 1]
    assert torch.equal(prepare_cu_seqlens_from_mask(mask), cu)
    assert torch.equal(prepare_cu_seqlens_from_lens(torch.tensor([3, 2, 5, 1])), cu)
    # the last q_len columns only (new tokens after cached ones)
    idx2, cu2 = get_unpad_indices_and_cu(mask, 2)
    assert idx2.tolist() == [b * 2 + t for b, t in kept(MASK[:, -2:])] and cu2.tolist() == [0, 2, 2, 4, 5]
    assert torch.equal(get_unpad_indices_and_cu(mask)[1], cu)


def test_index_first_axis_and_put_are_inverse_and_differentiable():
    x = torch.randn(7, 2, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([5, 0, 3])
    rows = index_first_axis(x, idx)
    assert torch.equal(rows, x[[5, 0, 3]])
    back = index_put_first_axis(rows, idx, 7)
    keep = torch.zeros(7, 1, 1, dtype=torch.float64)
    keep[[5, 0, 3]] = 1
    assert torch.equal(back, x * keep)
    (dx,) = torch.autograd.grad(back.sum(), x)
    assert torch.equal(dx, keep.expand_as(x))


def test_index_autograd_classes():
    """fla's IndexFirstAxis / IndexPutFirstAxis (``.apply`` forms): values as the functions, gradients by gradcheck
    (float64), repeated indices summing in IndexFirstAxis' backward."""
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(IndexFirstAxis.apply(x, idx), x[idx])
    assert torch.autograd.gradcheck(lambda t: IndexFirstAxis.apply(t, idx), (x,))
    v = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    out = IndexPutFirstAxis.apply(v, idx, 7)
    assert torch.equal(out[idx], v) and out[[1, 2, 4, 6]].abs().sum() == 0
    assert torch.autograd.gradcheck(lambda t: IndexPutFirstAxis.apply(t, idx, 7), (v,))
    (g,) = torch.autograd.grad(IndexFirstAxis.apply(x, torch.tensor([2, 2, 4])).sum(), x)
    assert g[2].tolist() == [2.0] * 3 and g[4].tolist() == [1.0] * 3 and g[0].abs().sum() == 0


def test_unpad_input_then_pad_input_is_the_masked_input():
    B, S = MASK.shape
    q, k, v = (torch.randn(B, S, 2, 3, requires_grad=True) for _ in range(3))
    q_u, (k_u, v_u), idx_q, (cu_q, cu_k), (max_q, max_k) = unpad_input(q, (k, v), MASK, S)
    sel = [b * S + t for b, t in kept(MASK)]
    assert torch.equal(k_u, k.flatten(0, 1)[sel]) and torch.equal(q_u, q.flatten(0, 1)[sel]) and v_u.shape == k_u.shape
    assert cu_q.tolist() == cu_k.tolist() == [0, 3, 5, 10, 11] and max_q == max_k == 5
    back = pad_input(q_u, idx_q, B, S)
    assert torch.equal(back, q * MASK[..., None, None])
    (dq,) = torch.autograd.grad(back.sum(), q)
    assert torch.equal(dq, MASK[..., None, None].float().expand_as(q))
    # a tuple of queries stays a tuple; keepdim adds the leading batch of 1
    (q1, q2), (k1,), *_ = unpad_input((q, q * 2), (k,), MASK, S, keepdim=True)
    assert q1.shape == (1, 11, 2, 3) and k1.shape == (1, 11, 2, 3) and torch.equal(q2, 2 * q1)


def test_unpad_input_decoding():
    B, S = MASK.shape
    q, k = torch.randn(B, 1, 4), torch.randn(B, S, 4)
    q_u, (k_u,), idx_q, (cu_q, cu_k), (max_q, max_k) = unpad_input(q, (k,), MASK, 1)
    assert torch.equal(q_u, q[:, 0]) and idx_q.tolist() == [0, 1, 2, 3] and cu_q.tolist() == [0, 1, 2, 3, 4]
    assert max_q == 1 and max_k == 5 and cu_k.tolist() == [0, 3, 5, 10, 11] and k_u.shape == (11, 4)
    assert torch.equal(pad_input(q_u, idx_q, B, 1), q)


def test_unpad_repad_hidden_states():
    B, S = MASK.shape
    h = torch.randn(B, 3, 6)
    packed, idx, cu = unpad_hidden_states(h, None, MASK, 3)
    assert packed.shape == (1, 7, 6) and cu.tolist() == [0, 3, 3, 6, 7]
    assert torch.equal(packed[0], h[MASK[:, -3:].bool()])
    assert torch.equal(repad_hidden_states(packed, idx, B, 3), h * MASK[:, -3:, None])
    # explicit cu_seqlens win; no mask: unchanged
    given, h1 = torch.tensor([0, 3]), h[:1]
    same, none_idx, cu2 = unpad_hidden_states(h1, given, MASK, 3)
    assert same is h1 and none_idx is None and cu2 is given
    assert unpad_hidden_states(h, None, None, 3)[1] is None
    assert repad_hidden_states(packed, None, B, 3) is packed


def test_padding_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="attention_mask must be a 2-D"):
        get_unpad_data(MASK[None])
    with pytest.raises(ValueError, match="attention_mask must be a 2-D"):
        get_unpad_data(MASK.float())
    with pytest.raises(ValueError, match="q_len must be the mask's length 5"):
        unpad_input(torch.randn(4, 3, 2), (torch.randn(4, 5, 2),), MASK, 3)
    with pytest.raises(ValueError, match="a state has shape \\[4, 6, 2\\]"):
        unpad_input(torch.randn(4, 5, 2), (torch.randn(4, 6, 2),), MASK, 5)
    with pytest.raises(ValueError, match="q_len must be in \\[1, 5\\]"):
        get_unpad_indices_and_cu(MASK, 9)
    with pytest.raises(ValueError, match="indices must be a 1-D integer"):
        index_first_axis(torch.randn(4, 2), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="one row per index"):
        pad_input(torch.randn(3, 2), torch.tensor([0, 1]), 2, 2)


class _Layer(torch.nn.Module):
    def __init__(self, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx


def test_cache_accessors_on_flacache():
    cache = FLACache()
    layer = _Layer(2)
    assert get_layer_cache(layer, None) is None and update_layer_cache(layer, None, recurrent_state=1) is None
    assert get_layer_cache(layer, cache) is None  # nothing stored yet
    state = torch.randn(1, 2, 3, 3)
    out = update_layer_cache(layer, cache, recurrent_state=state, offset=4)
    assert get_layer_cache(layer, cache) is out and out["recurrent_state"] is state
    assert cache.get_seq_length(2) == 4
    assert get_layer_cache(_Layer(0), cache) is None  # a slot created below layer 2, with no state
    assert require_cache_layer_idx(_Layer(None), None) is None
    with pytest.raises(ValueError, match="_Layer: layer_idx is required"):
        get_layer_cache(_Layer(None), cache)
