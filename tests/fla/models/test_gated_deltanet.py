"""GatedDeltaNetForCausalLM: the shared linear-LM checks (see linear_lm_checks.py) plus Gated DeltaNet specifics."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM, GatedDeltaNetModel
from tests.fla.models.linear_lm_checks import HYBRID, LinearLMChecks, ids, pytest_generate_tests  # noqa: F401
from tests.harness import DEVICE

ROOT = Path(__file__).resolve().parents[3]


class TestGatedDeltaNet(LinearLMChecks):
    config_cls, model_cls, base_model_cls = GatedDeltaNetConfig, GatedDeltaNetForCausalLM, GatedDeltaNetModel
    model_type = "gated_deltanet"
    tiny = dict(hidden_size=72, num_hidden_layers=2, num_heads=2, head_dim=18, intermediate_size=96)
    variants = {
        "plain": {},
        "gva_no_gate": dict(num_v_heads=4, use_gate=False, allow_neg_eigval=True),
        "hybrid": dict(HYBRID, use_short_conv=False, output_gate_activation="sigmoid", fuse_norm=False),
    }
    name_only_variants = {
        "gva_conv3": dict(num_v_heads=6, expand_v=1.5, conv_size=3),
        "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_short_conv=False, use_gate=False),
    }
    bad_heads = (dict(num_v_heads=3), "num_v_heads=3 is not a multiple of num_heads=2")

    def test_gate_parameters_init_and_reach_the_output(self):
        """A_log / dt_bias: Mamba 2 ranges at init, loaded values kept, and both change the logits."""
        model = self.model(num_v_heads=4).eval()
        layer = model.model.layers[0].attn
        A = layer.A_log.exp()
        dt = torch.nn.functional.softplus(layer.dt_bias)
        assert layer.A_log.shape == (4,) and bool(((A >= 1) & (A <= 16)).all()), A
        assert bool(((dt >= 1e-4 * 0.999) & (dt <= 0.1 * 1.001)).all()), dt
        x = ids(1, 20)
        with torch.no_grad():
            base = model(x).logits
            for param in (layer.A_log, layer.dt_bias):
                saved = param.clone()
                param.add_(1.0)
                assert not torch.allclose(base, model(x).logits, atol=1e-5)
                param.copy_(saved)
            assert torch.equal(base, model(x).logits)

    def test_init_weights_keeps_loaded_gate_parameters(self):
        model = self.model()
        layer = model.model.layers[0].attn
        with torch.no_grad():
            layer.A_log.fill_(math.log(3.0))
        layer.A_log._is_hf_initialized = True
        layer.reset_parameters()
        assert torch.equal(layer.A_log, torch.full_like(layer.A_log, math.log(3.0)))
        with torch.no_grad():
            before = layer.dt_bias.clone()
        layer.reset_parameters()
        assert not torch.equal(before, layer.dt_bias), "dt_bias (not loaded) is re-initialized"

    def test_config_errors(self):
        with pytest.raises(ValueError, match="output_gate_activation='relu' is not one of"):
            self.config(output_gate_activation="relu")
        with pytest.raises(ValueError, match=r"head_dim \* expand_v = 18 \* 1.1 is not an integer"):
            self.model(expand_v=1.1)
        with pytest.raises(ValueError, match=r"mode='parallel' is not one of \('chunk', 'fused_recurrent'\)"):
            self.model(attn_mode="parallel")


@pytest.mark.parametrize("name, params_m", [("tiny", 8.8), ("cpu", 0.4), ("340M", 379.9), ("1.3B", 1387.3)])
def test_repo_configs_load(name, params_m):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"gated_deltanet_{name}.json")
    assert type(config) is GatedDeltaNetConfig
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) < 0.1, f"gated_deltanet_{name}: {n:.1f}M parameters"


@pytest.mark.gpu
def test_340M_bf16_forward_backward_on_cuda():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "gated_deltanet_340M.json")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16).train()
    x = torch.randint(0, config.vocab_size, (2, 2048), device="cuda")
    loss = model(x, labels=x).loss
    assert abs(loss.item() - torch.log(torch.tensor(float(config.vocab_size))).item()) < 1.0, loss.item()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    cu = torch.tensor([0, 1, 1500, 2048, 4096], dtype=torch.int32, device="cuda")
    varlen_loss = model(x.reshape(1, -1), labels=x.reshape(1, -1), cu_seqlens=cu).loss
    assert torch.isfinite(varlen_loss) and abs(varlen_loss.item() - loss.item()) < 0.1
    model.eval()
    with torch.no_grad():
        gen = model.generate(x[:, :100], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert gen.shape == (2, 108)


def test_decode_state_is_per_value_head():
    """The cached recurrent state is [B, num_v_heads, head_dim, head_v_dim] float32."""
    model = TestGatedDeltaNet().model(num_v_heads=4).eval()
    with torch.no_grad():
        cache = model(ids(2, 5), use_cache=True).past_key_values
    state = cache[0]["recurrent_state"]
    assert state.shape == (2, 4, 18, 36) and state.dtype == torch.float32 and state.device == torch.device(DEVICE)
