"""Mamba2 specifics; the model-level checks every family passes are in test_conformance.py."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from fla.layers import Mamba2
from fla.models import Mamba2Config, Mamba2ForCausalLM
from fla.models.flops import TokenMixer
from fla.ops.mamba2 import naive_recurrent_mamba2_ssd
from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.families import BY_TYPE, FLA060_PATH, ids
from tests.harness import DEVICE, assert_close, tol

MAMBA2 = BY_TYPE["mamba2"]
ROOT = Path(__file__).resolve().parents[3]


def test_ours_win_the_auto_registration_over_transformers():
    """transformers has its own Mamba2 classes for model_type "mamba2": after ``import fla`` the Auto* ones are ours."""
    config = AutoConfig.for_model("mamba2", hidden_size=64, num_hidden_layers=1, head_dim=16, vocab_size=32)
    assert type(config) is Mamba2Config
    assert type(AutoModelForCausalLM.from_config(config)) is Mamba2ForCausalLM
    assert type(AutoConfig.from_pretrained(ROOT / "configs" / "mamba2_340M.json")) is Mamba2Config


def reference_layer(layer, x):
    """The layer's output from its weights, written out: in_proj split, conv + ``hidden_act``, the float64 SSD
    recurrence, then the SiLU gate and the grouped RMSNorm (in either order) or the ``hidden_act`` gate, out_proj."""
    H, P, G, N, W = layer.num_heads, layer.head_dim, layer.n_groups, layer.ssm_state_size, layer.conv_kernel_size
    z, xBC, dt = layer.in_proj(x).split([H * P, layer.conv_dim, H], -1)
    conv = layer.conv1d
    xBC = F.conv1d(F.pad(xBC.transpose(1, 2), (W - 1, 0)), conv.weight, conv.bias, groups=layer.conv_dim)
    xs, B, C = layer.act(xBC).transpose(1, 2).split([H * P, G * N, G * N], -1)
    D = layer.D.unflatten(0, (H, P)) if layer.D_has_hdim else layer.D
    y, _ = naive_recurrent_mamba2_ssd(
        xs.unflatten(-1, (H, P)), dt, layer.A_log, B.unflatten(-1, (G, N)), C.unflatten(-1, (G, N)), D,
        layer.dt_bias, tuple(layer.dt_limit),
    )  # fmt: skip
    y = y.flatten(-2)
    if layer.norm is None:
        return layer.out_proj(y * layer.act(z))
    h = y if layer.norm_before_gate else y * F.silu(z)
    h = h.unflatten(-1, (G, -1))  # RMSNorm per group of H * P / G features
    h = (h * torch.rsqrt(h.square().mean(-1, keepdim=True) + layer.norm.eps)).flatten(-2) * layer.norm.weight
    return layer.out_proj(h * F.silu(z) if layer.norm_before_gate else h)


@pytest.mark.parametrize("variant", ["plain", "ungated_hdim_dt_limit", "norm_before_gate", "gelu_ungated"])
def test_layer_matches_formula(variant):
    if variant == "gelu_ungated":  # an activation ShortConvolution does not fuse (the config allows silu only)
        layer = Mamba2(hidden_size=72, head_dim=18, state_size=16, n_groups=2, hidden_act="gelu", rmsnorm=False)
        layer = layer.to(DEVICE, torch.float64)
    else:
        fields = {"plain": {}, **MAMBA2.name_only}[variant]
        layer = MAMBA2.model(**fields).model.layers[0].mixer.double()
    with torch.no_grad():  # norms start at ones, D at ones, biases at zero: make every weight matter
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 11, 72, device=DEVICE, dtype=torch.float64)
    for training in (True, False):  # the chunk op, then the fused_recurrent one
        out, _, _ = layer.train(training)(x)
        with torch.no_grad():
            assert_close(f"layer (training={training})", reference_layer(layer, x), out, tol(torch.float64, 1e3))
    out.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_init_follows_fla060():
    """A_log, dt_bias in Mamba2's ranges, D = 1, out_proj ~ U(+-1/sqrt(fan_in * layers)); loaded values are kept."""
    model = MAMBA2.model(initializer_range=0.02)
    layer = model.model.layers[0].mixer
    A, dt = layer.A_log.exp(), F.softplus(layer.dt_bias)
    assert bool(((A >= 1) & (A <= 16)).all()) and bool(((dt >= 1e-4 * 0.999) & (dt <= 0.1 * 1.001)).all())
    assert torch.equal(layer.D, torch.ones_like(layer.D))
    bound = 1 / math.sqrt(144 * 2)
    assert layer.out_proj.weight.abs().max() <= bound and layer.out_proj.weight.abs().max() > 0.8 * bound
    with torch.no_grad():
        layer.A_log.fill_(math.log(3.0))
    layer.A_log._is_hf_initialized = True
    layer.reset_parameters()
    assert torch.equal(layer.A_log, torch.full_like(layer.A_log, math.log(3.0)))


def test_cache_holds_conv_and_ssm_states():
    model = MAMBA2.model().eval()
    with torch.no_grad():
        cache = model(ids(2, 5), use_cache=True).past_key_values
    state = cache[0]
    assert state["recurrent_state"].shape == (2, 8, 16, 18) and state["recurrent_state"].dtype == torch.float32
    assert state["conv_state"].shape == (2, 144 + 2 * 2 * 16, 4)


def test_fla060_config_json_loads(tmp_path):
    """A config.json written by fla 0.6.0 (derived num_heads stored, pairs as lists, Infinity) loads unchanged."""
    fields = dict(MAMBA2.fields(), num_heads=8, dt_limit=[0.0, math.inf], A_init_range=[1, 16], model_type="mamba2")
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.num_heads == 8 and config.dt_limit == [0.0, math.inf] and config.A_init_range == [1.0, 16.0]


def test_config_errors():
    with pytest.raises(ValueError, match="expand \\* hidden_size = 144 is not a multiple of head_dim=20"):
        MAMBA2.config(head_dim=20)
    with pytest.raises(ValueError, match="num_heads=4 but expand \\* hidden_size / head_dim = 144 / 18 = 8"):
        MAMBA2.config(num_heads=4)
    with pytest.raises(ValueError, match=r"dt_limit=\[0.2, 0.1\] must be a \[low, high\] pair"):
        MAMBA2.config(dt_limit=[0.2, 0.1])
    with pytest.raises(ValueError, match="dt_min=0.5, dt_max=0.1 must satisfy"):
        MAMBA2.config(dt_min=0.5)


def test_state_spaces_embedding_name_loads():
    """state-spaces checkpoints name the embedding ``backbone.embedding``: it loads as ``embeddings``."""
    model = MAMBA2.model()
    state = model.state_dict()
    state["backbone.embedding.weight"] = state.pop("backbone.embeddings.weight").clone() + 1
    model.load_state_dict(state)
    assert torch.equal(model.model.embeddings.weight, state["backbone.embedding.weight"])


def test_flops_and_tensor_parallel_refusal():
    config = AutoConfig.from_pretrained(ROOT / "configs" / "mamba2_340M.json")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    mixer = TokenMixer("linear", 32, 128, 64)  # 1024 * 2 / 64 heads, state 128 x head_dim 64
    expected = 6 * (n - 32000 * 1024) + 48 * mixer.flops_per_token(2048)
    assert model.flops_per_token(2048) == expected
    with pytest.raises(ConfigError, match="TP not supported for mamba2"):
        check_tp_supported(config, 2)


@pytest.mark.slow  # ~1 min: fla 0.6.0's norms run in the Triton interpreter
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """Checkpoints fla 0.6.0 saves (4 configs) load with no missing / unexpected keys and give its logits."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0")
    script = Path(__file__).with_name("fla060_mamba2_compat.py")
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    saved = subprocess.run(
        [sys.executable, str(script), "save", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr[-4000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run(
        [sys.executable, str(script), "load", str(tmp_path)], env=env, capture_output=True, text=True
    )
    print(loaded.stdout)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr[-4000:]
