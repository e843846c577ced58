"""FLACache: slots, token counters, windowed attention state, batch transforms, legacy format."""

import pytest
import torch

from fla.models.cache import FLACache


def kv(B, T, fill):
    return torch.full((B, T, 2, 3), float(fill)), torch.full((B, T, 2, 3), float(-fill))


def test_slots_counters_and_window():
    cache = FLACache()
    assert cache.get_seq_length(0) == 0 and len(cache) == 0
    state = cache.update(
        recurrent_state=torch.ones(2, 4, 5, 5), conv_state=(torch.zeros(2, 8, 4),), layer_idx=1, offset=7
    )
    assert len(cache) == 2 and cache.get_seq_length(1) == 7 and cache.get_seq_length(0) == 0
    assert state["attn_state"] is None and state["conv_state"][0].shape == (2, 8, 4)
    with pytest.raises(KeyError, match="no state for layer 0"):
        cache[0]
    cache.update(attn_state=kv(2, 5, 1), layer_idx=0, offset=5, cache_kwargs={"window_size": 6})
    k, _ = cache.update(attn_state=kv(2, 3, 2), layer_idx=0, offset=3, cache_kwargs={"window_size": 6})["attn_state"]
    assert k.shape[1] == 6 and cache.get_seq_length(0) == 8
    assert k[0, :, 0, 0].tolist() == [1, 1, 1, 2, 2, 2], "the window keeps the most recent positions"
    assert cache.layers[0].is_sliding and not cache.layers[1].is_sliding
    assert cache.get_mask_sizes(1, 0) == (6, 3)
    # recurrent slots are overwritten, not appended
    cache.update(recurrent_state=torch.zeros(2, 4, 5, 5), layer_idx=1, offset=1)
    assert cache[1]["recurrent_state"].sum() == 0 and cache.get_seq_length(1) == 8


def test_batch_transforms_touch_every_slot():
    cache = FLACache()
    rec = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 2).contiguous()
    cache.update(recurrent_state=rec, conv_state=(rec.clone(),), layer_idx=0, offset=1)
    cache.update(attn_state=(rec.clone(), rec.clone()), layer_idx=1, offset=2)
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    for t in (cache[0]["recurrent_state"], cache[0]["conv_state"][0], *cache[1]["attn_state"]):
        assert t[:, 0, 0, 0].tolist() == [2, 0, 0]
    cache.batch_select_indices(torch.tensor([0]))
    assert cache[1]["attn_state"][0].shape[0] == 1 and cache[0]["recurrent_state"].shape[0] == 1
    cache.batch_repeat_interleave(2)
    assert cache[0]["conv_state"][0].shape[0] == 2


def test_crop_and_reset():
    cache = FLACache()
    cache.update(attn_state=kv(1, 5, 1), layer_idx=0, offset=5)
    cache.crop(3)
    assert cache.get_seq_length(0) == 3 and cache[0]["attn_state"][0].shape[1] == 3
    cache.crop(-1)
    assert cache.get_seq_length(0) == 2
    cache.update(recurrent_state=torch.ones(1), layer_idx=1, offset=2)
    with pytest.raises(NotImplementedError, match="cannot be rolled back"):
        cache.crop(1)
    cache.reset()
    assert cache.get_seq_length(0) == 0


def test_legacy_round_trip():
    cache = FLACache()
    cache.update(recurrent_state=torch.ones(1, 2), layer_idx=0, offset=4)
    legacy = cache.to_legacy_cache()
    back = FLACache.from_legacy_cache(legacy, seen_tokens=4)
    assert back.get_seq_length(0) == 4 and torch.equal(back[0]["recurrent_state"], torch.ones(1, 2))
    assert FLACache.from_legacy_cache(back) is back
    with pytest.raises(ValueError, match="unknown state keys"):
        FLACache.from_legacy_cache([{"keys": torch.ones(1)}])
    with pytest.raises(NotImplementedError, match="offloading"):
        FLACache(offloading=True)


def test_cache_keyword_is_past_key_values():
    """transformers >= 5.24 renamed past_key_values to cache (its generate() passes cache=): both work, not both."""
    from fla.models import GLAConfig, GLAForCausalLM

    torch.manual_seed(0)
    model = GLAForCausalLM(GLAConfig(hidden_size=32, num_hidden_layers=2, num_heads=2, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        for key in ("past_key_values", "cache"):
            cache = model(ids[:, :6], use_cache=True).past_key_values
            assert isinstance(cache, FLACache) and cache.get_seq_length() == 6
            step = model(ids[:, 6:], use_cache=True, **{key: cache}).logits[:, -1]
            torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="either past_key_values or cache"):
            model(ids[:, 6:], past_key_values=FLACache(), cache=FLACache())
