"""Comba and Gated DeltaProduct model specifics: fla 0.6.0's config defaults, config errors, FLOPs, TP plans."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from fla.models import CombaConfig, GatedDeltaProductConfig
from fla.models.comba import CombaForCausalLM
from fla.models.gated_deltaproduct import GatedDeltaProductForCausalLM

COMMON_060 = dict(hidden_size=2048, num_hidden_layers=21, norm_eps=1e-6, hidden_ratio=4, intermediate_size=None,
                  hidden_act="swish", vocab_size=32000, attn=None, fuse_norm=True, fuse_swiglu=True)  # fmt: skip
COMBA_060 = dict(attn_mode="chunk", conv_size=4, head_dim=256, num_heads=6, num_v_heads=None, expand_v=2.0,
                 use_output_gate=True, use_short_conv=True, use_output_correction=True, use_inner_decay=True,
                 correction_factor=1.0)  # fmt: skip
PRODUCT_060 = dict(attn_mode="chunk", conv_size=4, head_dim=256, num_heads=6, expand_v=2.0, use_output_gate=True,
                   use_short_conv=True, use_forget_gate=False, allow_neg_eigval=False, num_householder=1)  # fmt: skip


@pytest.mark.parametrize("cls, own", [(CombaConfig, COMBA_060), (GatedDeltaProductConfig, PRODUCT_060)])
def test_defaults_are_fla060s(cls, own):
    config = cls()
    for name, value in {**COMMON_060, **own}.items():
        assert getattr(config, name) == value, name


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="GatedDeltaProductConfig: num_householder=0"):
        GatedDeltaProductConfig(num_householder=0)
    with pytest.raises(ValueError, match="CombaConfig: num_v_heads=9 is not a multiple of num_heads=6"):
        CombaConfig(num_v_heads=9)
    with pytest.raises(ValueError, match=r"CombaConfig: head_dim \* expand_v = 256 \* 0.3"):
        CombaConfig(expand_v=0.3)
    with pytest.raises(ValueError, match="attn_mode='parallel' is not one of"):
        GatedDeltaProductConfig(attn_mode="parallel")


def test_config_fields_reach_the_layers():
    small = dict(hidden_size=48, num_hidden_layers=1, vocab_size=64, head_dim=8, num_heads=2)
    comba = AutoModelForCausalLM.from_config(
        CombaConfig(**small, use_inner_decay=False, correction_factor=0.02, num_v_heads=4)
    )
    attn = comba.model.layers[0].attn
    assert not hasattr(attn, "decay") and torch.allclose(attn.D, torch.full((2,), 0.02)) and attn.num_v_heads == 4
    product = AutoModelForCausalLM.from_config(
        GatedDeltaProductConfig(**small, num_householder=3, use_forget_gate=True)
    )
    attn = product.model.layers[0].attn
    assert attn.num_householder == 3 and attn.use_forget_gate and attn.k_proj.weight.shape == (3 * 16, 48)


def test_flops_and_tp_plans():
    small = dict(hidden_size=64, num_hidden_layers=2, head_dim=16, num_heads=4)
    one = GatedDeltaProductForCausalLM.token_mixer(GatedDeltaProductConfig(**small, num_householder=1))
    three = GatedDeltaProductForCausalLM.token_mixer(GatedDeltaProductConfig(**small, num_householder=3))
    assert three.flops_per_token(2048) > 2.5 * one.flops_per_token(2048)  # the state work is per micro-step
    assert GatedDeltaProductForCausalLM.tensor_parallel_plan is None  # k/v/b projections interleave (n, head)
    region = CombaForCausalLM.tensor_parallel_plan.regions["attn"]
    assert {"A_log", "dt_bias", "decay", "D"} <= set(region.shard) and "num_v_heads" in region.divide
