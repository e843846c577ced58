"""Forgetting Transformer specifics beyond the conformance suite: FLOPs, several new tokens after a cache, TP."""

import pytest
import torch

from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.families import BY_TYPE, ids, padded_batches
from tests.harness import assert_close, tol

FOX = BY_TYPE["forgetting_transformer"]


@pytest.mark.parametrize("window", [None, 512])
def test_flops_count_the_attention(window):
    model = FOX.model(window_size=window)
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    heads, head_dim = model.config.num_heads, model.config.hidden_size // model.config.num_heads
    for seq_len in (64, 2048):
        attn = 12 * heads * head_dim * min(seq_len, window or seq_len) * model.config.num_hidden_layers
        assert model.flops_per_token(seq_len) == 6 * (n - emb) + attn


@pytest.mark.parametrize("variant", ["gqa_window_qk_norm_gate", pytest.param("plain", marks=pytest.mark.slow)])
def test_several_new_tokens_after_a_padded_cache(variant):
    """A cached prefill, then 3 new tokens in one call (each decoded over the cache + the earlier new ones)."""
    model = FOX.model(variant).eval()
    seqs, padded, mask, _, _ = padded_batches([9, 4], "left")
    extra = ids(2, 3)
    with torch.no_grad():
        cache = model(padded, attention_mask=mask, use_cache=True).past_key_values
        mask = torch.cat([mask, mask.new_ones(2, 3)], 1)
        out = model(extra, attention_mask=mask, past_key_values=cache, use_cache=True).logits
        for b, s in enumerate(seqs):
            full = model(torch.cat([s, extra[b]])[None]).logits[0, -3:]
            assert_close(f"row {b}", full, out[b], tol(torch.float32, 20))


def test_tensor_parallel_plan_refuses_qk_norm():
    with pytest.raises(ConfigError, match="qk_norm"):
        check_tp_supported(FOX.config(qk_norm=True), 2)
    check_tp_supported(FOX.config(), 2)
