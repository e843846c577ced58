"""RetNetForCausalLM: the shared linear-LM checks (see linear_lm_checks.py) plus RetNet specifics."""

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fla.models import RetNetConfig, RetNetForCausalLM, RetNetModel
from fla.ops.retention import naive_recurrent_retention
from tests.fla.models.linear_lm_checks import HYBRID, RATIO, LinearLMChecks, ids, pytest_generate_tests  # noqa: F401
from tests.harness import DEVICE, assert_close

ROOT = Path(__file__).resolve().parents[3]


class TestRetNet(LinearLMChecks):
    config_cls, model_cls, base_model_cls, model_type = RetNetConfig, RetNetForCausalLM, RetNetModel, "retnet"
    tiny = dict(hidden_size=72, num_hidden_layers=2, num_heads=4, intermediate_size=96)
    variants = {
        "plain": {},
        "gqa": dict(num_kv_heads=2, feature_map="relu", expand_v=1),
        "hybrid": dict(HYBRID, fuse_norm=False),
    }
    name_only_variants = {
        "short_conv_ignored": dict(use_short_conv=True, conv_size=3),
        "no_output_gate": dict(use_output_gate=False, elementwise_affine=False),
        "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, num_kv_heads=1),
    }

    def test_short_conv_is_ignored_like_fla060(self):
        layer = self.model(use_short_conv=True).model.layers[0].attn
        assert not layer.use_short_conv and not any("conv" in name for name, _ in layer.named_parameters())

    def test_layer_is_rotary_retention_with_output_gate(self):
        """The layer output == o_proj(rmsnorm(retention(rope(q), rope(k), v)) * swish(g)) from its own weights."""
        layer = self.model().model.layers[0].attn.eval()
        x = torch.randn(2, 11, 72, device=DEVICE, dtype=torch.float64)
        layer = layer.double()
        with torch.no_grad():
            out, _, _ = layer(x)
            q = layer.q_proj(x).unflatten(-1, (4, 18))
            k = layer.k_proj(x).unflatten(-1, (4, 18))
            v = layer.v_proj(x).unflatten(-1, (4, 36))
            q, k = layer.rotary(q, k)
            o, _ = naive_recurrent_retention(q, k, v)
            o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.g_norm_swish_gate.eps)
            o = o * layer.g_norm_swish_gate.weight
            ref = layer.o_proj(o.flatten(-2) * torch.nn.functional.silu(layer.g_proj(x)))
        assert_close("layer", ref, out, RATIO)


@pytest.mark.parametrize("name, params_m", [("340M", 380.2), ("1.3B", 1351.7)])
def test_repo_configs_load(name, params_m):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"retnet_{name}.json")
    assert type(config) is RetNetConfig
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) < 0.1, f"retnet_{name}: {n:.1f}M parameters"


def test_decode_positions_continue_per_row():
    """After a left-padded prefill, each row's rotary positions continue from its own real length."""
    model = TestRetNet().model().eval()
    x = ids(1, 7)
    with torch.no_grad():
        padded = torch.cat([torch.zeros(1, 3, dtype=torch.long, device=DEVICE), x[:, :6]], 1)
        mask = (torch.arange(9, device=DEVICE) >= 3).long()[None]
        cache = model(padded, attention_mask=mask, use_cache=True).past_key_values
        mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
        step = model(x[:, 6:], attention_mask=mask, past_key_values=cache).logits[0, -1]
        assert_close("step", model(x).logits[0, -1], step, RATIO)


@pytest.mark.gpu
def test_340M_bf16_forward_backward_on_cuda():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "retnet_340M.json")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16).train()
    x = torch.randint(0, config.vocab_size, (2, 2048), device="cuda")
    loss = model(x, labels=x).loss
    assert abs(loss.item() - torch.log(torch.tensor(float(config.vocab_size))).item()) < 1.0, loss.item()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
