"""MesaNet model specifics: fla 0.6.0's config defaults, config errors, the lambda init, FLOPs, TP plan."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from fla.layers import MesaNet
from fla.models import MesaNetConfig
from fla.models.flops import CHUNK_SIZE
from fla.models.mesa_net import MesaNetForCausalLM

MESA_060 = dict(
    attn_mode="chunk", hidden_size=2048, use_output_gate=False, use_short_conv=True, conv_size=4, num_heads=16,
    head_dim=128, lambda_lower_bound=0.25, hidden_ratio=4, intermediate_size=None, hidden_act="swish",
    num_hidden_layers=24, norm_eps=1e-6, attn=None, fuse_norm=True, fuse_swiglu=True, vocab_size=32000,
    max_cg_step_training=30, max_cg_step_decoding=30,
)  # fmt: skip


def test_defaults_are_fla060s():
    config = MesaNetConfig()
    for name, value in MESA_060.items():
        assert getattr(config, name) == value, name


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="MesaNetConfig: max_cg_step_training=-1 must be an int >= 0"):
        MesaNetConfig(max_cg_step_training=-1)
    with pytest.raises(ValueError, match=r"MesaNetConfig: lambda_lower_bound=1.5 must be a number in \[0, 1.0\)"):
        MesaNetConfig(lambda_lower_bound=1.5)
    with pytest.raises(ValueError, match="attn_mode='fused_recurrent' is not one of"):
        MesaNetConfig(attn_mode="fused_recurrent")


def test_layer_init_and_fields():
    layer = MesaNet(hidden_size=48, num_heads=2, head_dim=12, lambda_lower_bound=0.1, use_output_gate=True)
    # softplus(lambda_params) + lambda_lower_bound starts at 1 for every channel (fla 0.6.0's init)
    assert torch.allclose(layer.lamb(), torch.ones(2, 12))
    assert torch.allclose(layer.lambda_params, torch.full((24,), math.log(math.expm1(0.9))))
    assert layer.a_proj.bias is not None and layer.b_proj.bias is not None and not hasattr(layer, "v_conv1d")
    assert layer.use_output_gate and hasattr(layer, "g_proj")
    model = AutoModelForCausalLM.from_config(
        MesaNetConfig(
            hidden_size=48,
            num_hidden_layers=1,
            vocab_size=64,
            num_heads=2,
            head_dim=12,
            max_cg_step_training=7,
            max_cg_step_decoding=9,
        )  # fmt: skip
    )
    attn = model.model.layers[0].attn
    assert (attn.max_cg_step_training, attn.max_cg_step_decoding) == (7, 9)
    assert torch.allclose(attn.lamb(), torch.ones(2, 12))  # the shared _init_weights keeps the lambda init


def test_flops_count_the_cg_steps():
    small = dict(hidden_size=64, num_hidden_layers=2, head_dim=16, num_heads=4)
    none = MesaNetForCausalLM.token_mixer(MesaNetConfig(**small, max_cg_step_training=0))
    thirty = MesaNetForCausalLM.token_mixer(MesaNetConfig(**small, max_cg_step_training=30))
    h, k = 4, 16
    per_step = 2 * h * (4 * CHUNK_SIZE * k + 2 * k * k)  # forward solve + the backward's adjoint solve
    assert thirty.flops_per_token(2048) - none.flops_per_token(2048) == 30 * per_step
    region = MesaNetForCausalLM.tensor_parallel_plan.regions["attn"]
    assert {"q_conv1d", "k_conv1d", "lambda_params"} <= set(region.shard)
    assert {"a_proj", "b_proj"} <= set(region.col) and "num_heads" in region.divide
