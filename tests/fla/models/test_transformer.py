"""Transformer++ (softmax attention) specifics: logits_to_keep, sliding window, rotary positions after a cache,
init, unfused norms, fla 0.6.0's config.json. The model-level checks every family passes are in test_conformance.py."""

import json

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fla.models import TransformerConfig, TransformerForCausalLM
from tests.fla.models.families import BY_TYPE, RATIO, ids
from tests.harness import DEVICE, assert_close

TRANSFORMER = BY_TYPE["transformer"]
make_model = TRANSFORMER.model


def test_logits_to_keep():
    model = make_model().eval()
    x = ids(2, 9)
    with torch.no_grad():
        full = model(x).logits
        assert_close("last", full[:, -1:], model(x, logits_to_keep=1).logits, RATIO)
        index = torch.tensor([0, 4], device=DEVICE)
        assert_close("index", full[:, index], model(x, logits_to_keep=index).logits, RATIO)


def test_sliding_window_changes_long_range_outputs():
    full, windowed = make_model().eval(), make_model(window_size=3).eval()
    windowed.load_state_dict(full.state_dict())
    x = ids(1, 12)
    with torch.no_grad():
        a, b = full(x).logits, windowed(x).logits
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6), "inside the window both models agree"
    assert not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-3), "past the window they must differ"


def test_init_is_deterministic_and_follows_initializer_range():
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    big = TransformerForCausalLM(TRANSFORMER.config(hidden_size=256, num_heads=4, initializer_range=0.05))
    assert abs(big.model.layers[0].attn.q_proj.weight.std().item() - 0.05) < 0.003
    assert abs(big.model.embeddings.weight.std().item() - 0.05) < 0.003
    assert torch.equal(big.model.layers[0].mlp_norm.weight, torch.ones(256))
    tied = make_model(tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.model.embeddings.weight


def test_position_ids_drive_rotary_positions_after_a_cache():
    """RoPE is shift-invariant within a sequence, so position_ids show after a cache: right ids == full forward."""
    model = make_model().eval()
    x = ids(2, 9)
    with torch.no_grad():
        full = model(x).logits
        step = []
        for start in (8, 0):
            cache = model(x[:, :8], use_cache=True).past_key_values
            position_ids = torch.full((2, 1), start, device=DEVICE)
            step.append(model(x[:, 8:], past_key_values=cache, position_ids=position_ids).logits)
    assert_close("position 8", full[:, 8:], step[0], RATIO)
    assert not torch.allclose(full[:, 8:], step[1], atol=1e-4), "position 0 after 8 cached tokens must differ"


def test_fuse_norm_off_matches_fused():
    fused, plain = make_model(), make_model(fuse_norm=False, fuse_swiglu=False)
    assert isinstance(plain.model.norm, torch.nn.RMSNorm)
    plain.load_state_dict(fused.state_dict())
    x = ids(2, 10)
    with torch.no_grad():
        assert_close("logits", fused(x).logits.double(), plain(x).logits, RATIO)


# every field of flash-linear-attention 0.6.0's TransformerConfig, as its save_pretrained writes them
FLA060_JSON = {
    "architectures": ["TransformerForCausalLM"],
    "attnres_block_size": None,
    "bos_token_id": 1,
    "elementwise_affine": True,
    "eos_token_id": 2,
    "fuse_cross_entropy": True,
    "fuse_linear_cross_entropy": False,
    "fuse_norm": True,
    "fuse_swiglu": True,
    "hidden_act": "swish",
    "hidden_ratio": 4,
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": None,
    "max_position_embeddings": 2048,
    "model_type": "transformer",
    "norm_eps": 1e-06,
    "num_heads": 4,
    "num_hidden_layers": 2,
    "num_kv_heads": 2,
    "pad_token_id": None,
    "qk_norm": True,
    "qkv_bias": False,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "dtype": "float32",
    "transformers_version": "5.0.0",
    "use_cache": True,
    "use_l2warp": False,
    "vocab_size": 256,
    "window_size": None,
}


def test_fla060_config_json_loads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(FLA060_JSON))
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is TransformerConfig
    for key in ("hidden_size", "num_kv_heads", "qk_norm", "rope_theta", "fuse_cross_entropy", "vocab_size"):
        assert getattr(config, key) == FLA060_JSON[key], key
    model = AutoModelForCausalLM.from_config(config)
    assert model.model.layers[0].mlp.intermediate_size == 256  # fla's default: 2/3 * 4 * 64 rounded up to 256
    assert model(torch.randint(0, 256, (1, 5))).logits.shape == (1, 5, 256)
