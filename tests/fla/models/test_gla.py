"""GLAForCausalLM: the shared linear-LM checks (see linear_lm_checks.py) plus GLA specifics."""

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fla.models import GLAConfig, GLAForCausalLM, GLAModel
from tests.fla.models.linear_lm_checks import HYBRID, LinearLMChecks, ids, pytest_generate_tests  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


class TestGLA(LinearLMChecks):
    config_cls, model_cls, base_model_cls, model_type = GLAConfig, GLAForCausalLM, GLAModel, "gla"
    tiny = dict(hidden_size=72, num_hidden_layers=2, num_heads=4, intermediate_size=96)
    variants = {
        "plain": {},
        "conv_gqa": dict(use_short_conv=True, num_kv_heads=2, clamp_min=-0.05, feature_map="relu"),
        "hybrid": dict(HYBRID, use_short_conv=True, fuse_norm=False),
    }
    name_only_variants = {
        "no_output_gate": dict(use_output_gate=False, elementwise_affine=False, expand_v=2),
        "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, num_kv_heads=1),
    }

    @pytest.mark.slow  # ~20 s: GLA's gated chunk kernels in the Triton interpreter
    def test_triton_backend_matches_torch_backend(self):
        super().test_triton_backend_matches_torch_backend()

    def test_gate_is_low_rank_and_normalized(self):
        layer = self.model(clamp_min=None).model.layers[0].attn
        assert layer.gk_proj[0].weight.shape == (16, 72) and layer.gk_proj[1].bias.shape == (36,)
        assert layer.gate_logit_normalizer == 16 and layer.head_k_dim == 9 and layer.head_v_dim == 18

    def test_clamp_min_changes_outputs(self):
        plain, clamped = self.model().eval(), self.model(clamp_min=-0.01).eval()
        x = ids(1, 20)
        with torch.no_grad():
            assert not torch.allclose(plain(x).logits, clamped(x).logits, atol=1e-4)


@pytest.mark.parametrize("name, params_m", [("tiny", 8.7), ("340M", 374.5), ("1.3B", 1365.5)])
def test_repo_configs_load(name, params_m):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"gla_{name}.json")
    assert type(config) is GLAConfig
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) < 0.1, f"gla_{name}: {n:.1f}M parameters"


@pytest.mark.gpu
def test_340M_bf16_forward_backward_on_cuda():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "gla_340M.json")
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
