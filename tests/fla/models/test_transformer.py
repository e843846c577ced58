"""TransformerForCausalLM: loss, padding == varlen == per-sequence, generate with FLACache, save/load, Auto*."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import fla  # noqa: F401  (registers the Auto* classes)
from fla.models import TransformerConfig, TransformerForCausalLM, TransformerModel
from tests.fla.models.linear_lm_checks import V, greedy_by_full_forward, ids, padded_batches
from tests.harness import DEVICE, assert_close, tol

ROOT = Path(__file__).resolve().parents[3]
RATIO = tol(torch.float32, 20)


def tiny_config(**kw):
    base = dict(
        hidden_size=120,
        num_hidden_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=100,
        vocab_size=V,
        max_position_embeddings=64,
        fuse_cross_entropy=False,
    )
    return TransformerConfig(**{**base, **kw})


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerForCausalLM(tiny_config(**kw)).to(DEVICE)


def test_forward_backward_reaches_every_parameter():
    model = make_model(qk_norm=True).train()
    x = ids(2, 33)
    out = model(x, labels=x)
    assert out.logits.shape == (2, 33, V) and out.past_key_values is None
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("path", ["plain", "fused", "fused_linear"])
def test_loss_is_shifted_cross_entropy(path):
    flags = {"plain": {}, "fused": dict(fuse_cross_entropy=True), "fused_linear": dict(fuse_linear_cross_entropy=True)}
    model = make_model(**flags[path]).train()
    x = ids(3, 17)
    labels = x.clone()
    labels[0, 5:9] = -100
    labels[2, :] = -100
    labels[2, 3] = x[2, 3]  # one target in an otherwise ignored row
    out = model(x, labels=labels)
    assert (out.logits is None) == (path == "fused_linear"), "fused linear CE never materializes the logits"
    (dw,) = torch.autograd.grad(out.loss, model.lm_head.weight)

    hidden = model.model(x).last_hidden_state
    logits = model.lm_head(hidden)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V).double(), labels[:, 1:].reshape(-1), ignore_index=-100)
    (dw_ref,) = torch.autograd.grad(ref, model.lm_head.weight)
    assert_close("loss", ref, out.loss, tol(torch.float32, 10))
    assert_close("dlm_head", dw_ref, dw, tol(torch.float32, 100))

    n = int((labels[:, 1:] != -100).sum())
    summed = model(x, labels=labels, num_items_in_batch=torch.tensor(n * 2)).loss
    assert_close("num_items_in_batch", ref / 2, summed, tol(torch.float32, 10))


def test_logits_to_keep():
    model = make_model().eval()
    x = ids(2, 9)
    with torch.no_grad():
        full = model(x).logits
        assert_close("last", full[:, -1:], model(x, logits_to_keep=1).logits, RATIO)
        index = torch.tensor([0, 4], device=DEVICE)
        assert_close("index", full[:, index], model(x, logits_to_keep=index).logits, RATIO)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_equals_varlen_equals_each_sequence(side):
    model = make_model(window_size=6, qk_norm=True).train()
    lens = [7, 1, 12]
    seqs, padded, mask, packed, cu = padded_batches(lens, side)
    out_pad = model(padded, attention_mask=mask).logits
    out_var = model(packed, cu_seqlens=cu).logits[0]
    weights = torch.randn(sum(lens), V, device=DEVICE)
    real_pad = out_pad[mask.bool()]
    for b, s in enumerate(seqs):
        ref = model(s[None]).logits[0]
        assert_close(f"padded row {b}", ref, out_pad[b][mask[b].bool()], RATIO)
        assert_close(f"varlen seq {b}", ref, out_var[cu[b] : cu[b + 1]], RATIO)
    # backward through the unpad/repad path == through the packed path
    g_pad = torch.autograd.grad((real_pad * weights).sum(), list(model.parameters()))
    g_var = torch.autograd.grad((out_var * weights).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), g_var, g_pad):
        assert_close(f"d{name}", a, b, RATIO)


@pytest.mark.parametrize("kw", [dict(), dict(window_size=4, qk_norm=True, num_kv_heads=1)], ids=["full", "window"])
def test_generate_greedy_matches_full_forward(kw):
    model = make_model(**kw).eval()
    _, padded, mask, _, _ = padded_batches([6, 2, 9], "left")
    with torch.no_grad():
        gen = model.generate(
            padded, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
            return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
        ref_seq, ref_logits = greedy_by_full_forward(model, padded, mask, 6)
        assert torch.equal(gen.sequences, ref_seq)
        for step, (a, b) in enumerate(zip(ref_logits, gen.logits)):
            assert_close(f"logits step {step}", a, b, RATIO)
        # the same prompt alone (no padding) continues the same way
        alone = model.generate(padded[1:2, -2:], max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(alone[0, 2:], gen.sequences[1, -6:])


def test_generate_sampling_and_beam_search():
    model = make_model().eval()
    _, padded, mask, _, _ = padded_batches([5, 3], "left")
    kw = dict(attention_mask=mask, max_new_tokens=5, pad_token_id=0)
    with torch.no_grad():
        greedy = model.generate(padded, do_sample=False, **kw)
        assert torch.equal(model.generate(padded, do_sample=True, top_k=1, **kw), greedy)
        torch.manual_seed(1)
        first = model.generate(padded, do_sample=True, temperature=2.0, **kw)
        torch.manual_seed(1)
        assert torch.equal(model.generate(padded, do_sample=True, temperature=2.0, **kw), first)
        # beam search reorders the cache; without a cache it recomputes everything
        beams = model.generate(padded, num_beams=3, do_sample=False, **kw)
        assert torch.equal(model.generate(padded, num_beams=3, do_sample=False, use_cache=False, **kw), beams)


def test_sliding_window_changes_long_range_outputs():
    full, windowed = make_model().eval(), make_model(window_size=3).eval()
    windowed.load_state_dict(full.state_dict())
    x = ids(1, 12)
    with torch.no_grad():
        a, b = full(x).logits, windowed(x).logits
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6), "inside the window both models agree"
    assert not torch.allclose(a[:, 3:], b[:, 3:], atol=1e-3), "past the window they must differ"


def test_parameter_names_and_shapes():
    model = make_model(qk_norm=True, qkv_bias=True)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["model.embeddings.weight"] == (V, 120)
    assert shapes["model.layers.1.attn.k_proj.weight"] == (60, 120)  # 2 kv heads x 30
    assert shapes["model.layers.1.attn.q_proj.bias"] == (120,)
    assert shapes["model.layers.0.attn.q_norm.weight"] == (30,)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (120, 100)
    assert {"model.norm.weight", "lm_head.weight", "model.layers.0.attn_norm.weight"} <= shapes.keys()
    assert not any("rotary" in k for k in shapes), "rotary tables are not part of the checkpoint"


def test_init_is_deterministic_and_follows_initializer_range():
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    big = TransformerForCausalLM(tiny_config(hidden_size=256, num_heads=4, initializer_range=0.05))
    assert abs(big.model.layers[0].attn.q_proj.weight.std().item() - 0.05) < 0.003
    assert abs(big.model.embeddings.weight.std().item() - 0.05) < 0.003
    assert torch.equal(big.model.layers[0].mlp_norm.weight, torch.ones(256))
    tied = make_model(tie_word_embeddings=True)
    assert tied.lm_head.weight is tied.model.embeddings.weight


def test_meta_device_build_then_init_weights():
    """The trainer's path: build on meta, materialize, init_weights (rotary tables included)."""
    config = tiny_config(qk_norm=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.to_empty(device=DEVICE)
    torch.manual_seed(0)
    model.init_weights()
    reference = make_model(qk_norm=True)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        if "norm" in name:
            assert torch.equal(p, q), name
        else:
            assert abs(p.std().item() - 0.02) < 0.004, name
    rotary, ref_rotary = model.model.layers[1].attn.rotary, reference.model.layers[1].attn.rotary
    assert torch.equal(rotary.inv_freq, ref_rotary.inv_freq)
    model.load_state_dict(reference.state_dict())
    x = ids(2, 9)
    with torch.no_grad():
        assert torch.equal(model(x).logits, reference(x).logits)


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


def test_gradient_checkpointing_same_gradients():
    model = make_model().train()
    x = ids(2, 11)
    g0 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    model.gradient_checkpointing_enable()  # the name both transformers 5.17 (GPU machine) and 5.23 know
    g1 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    for a, b in zip(g0, g1):
        assert_close("grad", a, b, RATIO)


def test_save_pretrained_round_trip_is_bitwise(tmp_path):
    model = make_model(qk_norm=True, window_size=5).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).to(DEVICE).eval()
    assert type(loaded) is TransformerForCausalLM and loaded.config.window_size == 5
    x = ids(2, 13)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_auto_classes_after_import_fla():
    config = AutoConfig.for_model("transformer", hidden_size=64, num_heads=4, num_hidden_layers=1, vocab_size=V)
    assert type(config) is TransformerConfig
    assert type(AutoModel.from_config(config)) is TransformerModel
    assert type(AutoModelForCausalLM.from_config(config)) is TransformerForCausalLM


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


@pytest.mark.parametrize("name, params_m", [("tiny", 8.7), ("340M", 373.9), ("1.3B", 1364.3)])
def test_repo_configs_load(name, params_m):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"transformer_{name}.json")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) < 0.1, f"transformer_{name}: {n:.1f}M parameters"


def test_errors_are_clear():
    model = make_model()
    x = ids(2, 5)
    with pytest.raises(ValueError, match=r"only \[batch_size, seq_len\] padding masks"):
        model(x, attention_mask=torch.ones(2, 5, 5, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="fuse_cross_entropy and fuse_linear_cross_entropy are both true"):
        tiny_config(fuse_cross_entropy=True, fuse_linear_cross_entropy=True)
    with pytest.raises(ValueError, match="use_l2warp=true is not supported"):
        tiny_config(use_l2warp=True)
    with pytest.raises(ValueError, match="num_heads=4 is not a multiple of num_kv_heads=3"):
        tiny_config(num_kv_heads=3)
    with pytest.raises(ValueError, match=r"labels has shape \[2, 4\], expected \[2, 5\]"):
        model(x, labels=x[:, :4])
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()


@pytest.mark.gpu
def test_340M_bf16_forward_backward_on_cuda():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "transformer_340M.json")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16).train()
    x = torch.randint(0, config.vocab_size, (2, 2048), device="cuda")
    loss = model(x, labels=x).loss
    assert abs(loss.item() - torch.log(torch.tensor(float(config.vocab_size))).item()) < 1.0, loss.item()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # packed varlen batch of the same tokens: loss within bf16 noise of the padded-free batch
    cu = torch.tensor([0, 1, 1500, 2048, 4096], dtype=torch.int32, device="cuda")
    varlen_loss = model(x.reshape(1, -1), labels=x.reshape(1, -1), cu_seqlens=cu).loss
    assert torch.isfinite(varlen_loss) and abs(varlen_loss.item() - loss.item()) < 0.1
