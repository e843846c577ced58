"""linear_attn specifics; the model-level checks every family passes are in test_conformance.py."""

import pytest
import torch
from transformers import AutoConfig

from fla.models import LinearAttentionConfig, LinearAttentionForCausalLM
from fla.models.flops import CHUNK_SIZE, TokenMixer, count_params
from tests.fla.models.families import BY_TYPE, ids

LA = BY_TYPE["linear_attn"]

# fla 0.6.0's LinearAttentionConfig defaults (fla/models/linear_attn/configuration_linear_attn.py)
FLA060_DEFAULTS = dict(
    attn_mode="fused_chunk", hidden_size=2048, expand_k=1.0, expand_v=1.0, hidden_ratio=4, intermediate_size=None,
    num_hidden_layers=24, num_heads=4, num_kv_heads=None, feature_map="elementwise_product",
    tie_feature_map_qk=False, norm_q=False, norm_k=False, norm_feature_map=False, hidden_act="swish",
    max_position_embeddings=2048, elementwise_affine=True, norm_eps=1e-6, attn=None, use_cache=True,
    pad_token_id=None, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02,
    fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False,
    vocab_size=32000, attnres_block_size=None,
)  # fmt: skip


def test_config_fields_and_defaults_are_fla060s():
    config = LinearAttentionConfig()
    assert {name: getattr(config, name) for name in FLA060_DEFAULTS} == FLA060_DEFAULTS


def test_config_wires_the_layer():
    model = LA.model(feature_map="dpfp", norm_q=True, norm_k=True, norm_feature_map=True, attn_mode="fused_recurrent")
    layer = model.model.layers[0].attn
    assert layer.mode == "fused_recurrent" and layer.feature_map == "dpfp"
    assert layer.norm_q and layer.norm_k and layer.do_feature_map_norm and layer.feature_dim == 8 * 18


@torch.no_grad()
def test_feature_map_choice_changes_outputs():
    """Same projections, other feature maps: other logits (the map is really applied)."""
    x = ids(2, 20)
    reference = LA.model(feature_map="relu").eval()
    logits = {}
    for feature_map in ("relu", "elu", "identity", "dpfp", "hedgehog"):
        model = LA.model(feature_map=feature_map).eval()
        model.load_state_dict(reference.state_dict(), strict=False)  # shared names: projections, norms, MLPs
        logits[feature_map] = model(x).logits
    names = list(logits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(logits[a], logits[b], atol=1e-4), (a, b)


@torch.no_grad()
def test_norm_k_changes_outputs():
    x = ids(2, 20)
    plain = LA.model(feature_map="elu").eval()
    normed = LA.model(feature_map="elu", norm_k=True).eval()
    normed.load_state_dict(plain.state_dict())
    assert not torch.allclose(plain(x).logits, normed(x).logits, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("norm", ["norm_feature_map", "norm_q"])
def test_per_token_normalizations_only_rescale_heads(norm):
    """norm_q and norm_feature_map divide each head's output by a positive per-token number (positive
    features): the per-head RMSNorm removes it (as in fla 0.6.0); without the norm they change the output."""
    x = ids(2, 20)
    for output_norm, same in (("rmsnorm", True), ("identity", False)):
        plain = LA.model(feature_map="elu").eval()
        normed = LA.model(feature_map="elu", **{norm: True}).eval()
        for model in (plain, normed):
            for block in model.model.layers:
                if output_norm == "identity":
                    block.attn.norm = torch.nn.Identity()
        normed.load_state_dict(plain.state_dict())
        assert torch.allclose(plain(x).logits, normed(x).logits, atol=1e-4) == same, output_norm


@torch.no_grad()
def test_normalized_output_is_a_weighted_average_of_values():
    """With do_feature_map_norm and positive features, each head's output (before its norm) is a convex
    combination of the values so far: with all values equal, it is that value."""
    layer = LA.model(feature_map="hedgehog", norm_feature_map=True, num_hidden_layers=1).model.layers[0].attn
    seen = {}
    layer.norm.register_forward_hook(lambda mod, args, out: seen.update(o=args[0]))
    layer.v_proj.weight.zero_()
    layer.v_proj.weight[:, 0] = 1.0  # v = x[..., 0] in every channel
    x = torch.randn(2, 30, 72)
    x[..., 0] = 0.7
    layer.eval()(x)
    torch.testing.assert_close(seen["o"], torch.full_like(seen["o"], 0.7), rtol=1e-5, atol=1e-5)


def test_flops_count_the_feature_width():
    config = AutoConfig.from_pretrained(LA.tiny_json)  # hidden 128, 4 heads: head dim 32
    assert LinearAttentionForCausalLM.token_mixer(config) == TokenMixer("linear", 4, 32, 32)
    with torch.device("meta"):
        model = LinearAttentionForCausalLM(config)
    n, emb = count_params(model)
    mixer = 3 * 4 * (4 * 32 * 32 + 2 * CHUNK_SIZE * (32 + 32))
    assert model.flops_per_token(512) == 6 * (n - emb) + 2 * mixer
    hedgehog = LinearAttentionConfig(hidden_size=128, num_heads=4, feature_map="hedgehog", num_hidden_layers=2)
    assert LinearAttentionForCausalLM.token_mixer(hedgehog) == TokenMixer("linear", 4, 64, 32)
    dpfp = LinearAttentionConfig(hidden_size=128, num_heads=4, feature_map="dpfp", expand_v=2, num_hidden_layers=2)
    assert LinearAttentionForCausalLM.token_mixer(dpfp) == TokenMixer("linear", 4, 256, 64)


def test_tp_plan_splits_projections_and_replicates_the_feature_maps():
    plan = LinearAttentionForCausalLM.tensor_parallel_plan
    attn = plan.regions["attn"]
    assert attn.col == ("q_proj", "k_proj", "v_proj") and attn.row == ("o_proj",)
    assert {"num_heads", "num_kv_heads", "key_dim", "value_dim"} <= set(attn.divide)
    layer = LA.model().model.layers[0].attn
    sharded = {f"{c}.weight" for c in attn.col + attn.row}
    replicated = {n for n, _ in layer.named_parameters()} - sharded
    assert replicated == {
        "norm.weight",
        *(f"feature_map_{t}.layer{i}.{p}" for t in "qk" for i in "12" for p in ("weight", "bias")),
    }
