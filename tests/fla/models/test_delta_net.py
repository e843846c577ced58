"""DeltaNetForCausalLM: the shared linear-LM checks (see linear_lm_checks.py) plus DeltaNet specifics."""

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from fla.models import DeltaNetConfig, DeltaNetForCausalLM, DeltaNetModel
from tests.fla.models.linear_lm_checks import HYBRID, LinearLMChecks, ids, pytest_generate_tests  # noqa: F401

ROOT = Path(__file__).resolve().parents[3]


class TestDeltaNet(LinearLMChecks):
    config_cls, model_cls, base_model_cls, model_type = DeltaNetConfig, DeltaNetForCausalLM, DeltaNetModel, "delta_net"
    tiny = dict(hidden_size=72, num_hidden_layers=2, num_heads=4, intermediate_size=96)
    variants = {
        "plain": {},
        "gate_relu_sum": dict(use_gate=True, qk_activation="relu", qk_norm="sum", allow_neg_eigval=True),
        "hybrid": dict(HYBRID, use_short_conv=False, use_beta=False, qk_activation="elu", fuse_norm=False),
    }
    name_only_variants = {
        "identity_wide_v": dict(qk_activation="identity", expand_v=2, conv_size=3),
        "unfused_tied": dict(fuse_norm=False, tie_word_embeddings=True, use_beta=False, use_short_conv=False),
    }
    bad_heads = (dict(num_heads=5), "key dim 72 is not a multiple of num_heads=5")

    def test_feature_map_options_change_outputs(self):
        """qk_activation, qk_norm, use_beta and allow_neg_eigval each reach the computation."""
        x = ids(1, 20)
        with torch.no_grad():
            base = self.model().eval()(x).logits
            for fields in (
                dict(qk_activation="relu"),
                dict(qk_norm="sum"),
                dict(use_beta=False),
                dict(allow_neg_eigval=True),
            ):
                other = self.model(**fields).eval()(x).logits
                assert not torch.allclose(base, other, atol=1e-4), fields

    def test_config_errors(self):
        with pytest.raises(ValueError, match="qk_activation='tanh' is not one of"):
            self.model(qk_activation="tanh")
        with pytest.raises(ValueError, match="qk_norm='l1' is not one of"):
            self.model(qk_norm="l1")
        with pytest.raises(ValueError, match=r"mode='fused_chunk' is not one of \('chunk', 'fused_recurrent'\)"):
            self.model(attn_mode="fused_chunk")


@pytest.mark.parametrize("name, params_m", [("tiny", 8.7), ("cpu", 0.4), ("340M", 374.4), ("1.3B", 1365.7)])
def test_repo_configs_load(name, params_m):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"delta_net_{name}.json")
    assert type(config) is DeltaNetConfig
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - params_m) < 0.1, f"delta_net_{name}: {n:.1f}M parameters"


@pytest.mark.gpu
def test_340M_bf16_forward_backward_on_cuda():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "delta_net_340M.json")
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
