"""fla.models.flops: the rule a family's ``token_mixer`` feeds (all configs: tests/flame/test_model_knowledge.py)."""

import types

from fla.models.flops import TokenMixer, flops_per_token, layer_mixers, softmax_attention_from_config


def cfg(**kw):
    base = {"num_hidden_layers": 2, "hidden_size": 64, "tie_word_embeddings": False}
    return types.SimpleNamespace(**{**base, **kw})


def test_linear_attention_is_length_free_and_hybrids_count_attention():
    gla = TokenMixer.from_expand("linear", 64, 4, 0.5, 1.0)
    assert gla == TokenMixer("linear", 4, 8, 16)
    per_layer = 3 * 4 * (4 * 8 * 16 + 2 * 64 * (8 + 16))
    assert gla.flops_per_token(64) == gla.flops_per_token(8192) == per_layer
    assert flops_per_token(cfg(), 1000, 0, 64, gla) == 6 * 1000 + 2 * per_layer

    gdn = TokenMixer.from_head_dim("delta", 2, 32, 2)
    assert gdn == TokenMixer("delta", 2, 32, 64)
    delta = 3 * 2 * (4 * 32 * 64 + 2 * 64 * (32 + 64)) + 3 * 2 * 2 * 64 * 32
    assert flops_per_token(cfg(), 0, 0, 64, gdn) == 2 * delta

    hybrid = cfg(attn={"layers": [1], "num_heads": 2, "window_size": 512})
    assert layer_mixers(hybrid, gla) == [gla, TokenMixer("softmax", 2, 32, 32, 512)]
    assert flops_per_token(hybrid, 0, 0, 1024, gla) == per_layer + 12 * 2 * 32 * 512


def test_softmax_attention_from_generic_fields():
    assert softmax_attention_from_config(cfg(num_attention_heads=4)) == TokenMixer("softmax", 4, 16, 16)
    assert softmax_attention_from_config(cfg(n_head=2, head_dim=8, window_size=4)) == TokenMixer("softmax", 2, 8, 8, 4)
    assert softmax_attention_from_config(cfg()) is None
    assert flops_per_token(cfg(), 100, 10, 64, None) == 6 * 90  # no rule: 6N only
    assert flops_per_token(cfg(tie_word_embeddings=True), 100, 10, 64, None) == 6 * 100
