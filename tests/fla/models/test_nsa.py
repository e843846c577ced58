"""NSA specifics beyond the conformance suite: FLOPs of the three branches, several new tokens after a padded
cache, TP refusing a split of the key/value groups."""

import pytest
import torch

from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.families import BY_TYPE, ids, padded_batches
from tests.harness import assert_close, tol

NSA = BY_TYPE["nsa"]


@pytest.mark.parametrize("window", [0, 6])
def test_flops_count_the_three_branches(window):
    model = NSA.model(window_size=window)
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    h, d, bs, s = c.num_heads, c.head_dim, c.block_size, c.block_counts
    for seq_len in (4, 64, 2048):
        keys = seq_len / bs + min(seq_len, s * bs) + min(seq_len, window)
        mixer = 6 * h * 2 * d * keys + 2 * h * d * seq_len / bs
        assert model.flops_per_token(seq_len) == pytest.approx(6 * (n - emb) + c.num_hidden_layers * mixer)


def test_several_new_tokens_after_a_padded_cache():
    """A cached padded prefill, then 3 new tokens in one call (the last queries over all cached keys)."""
    model = NSA.model().eval()
    seqs, padded, mask, _, _ = padded_batches([13, 6], "left")
    extra = ids(2, 3)
    with torch.no_grad():
        cache = model(padded, attention_mask=mask, use_cache=True).past_key_values
        mask = torch.cat([mask, mask.new_ones(2, 3)], 1)
        out = model(extra, attention_mask=mask, past_key_values=cache, use_cache=True).logits
        for b, s in enumerate(seqs):
            full = model(torch.cat([s, extra[b]])[None]).logits[0, -3:]
            assert_close(f"row {b}", full, out[b], tol(torch.float32, 20))


def test_tensor_parallel_needs_whole_key_value_groups():
    check_tp_supported(NSA.config(num_kv_heads=2), 2)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        check_tp_supported(NSA.config(num_kv_heads=1), 2)
