"""Mamba / Samba specifics (fla 0.6.0 defaults and checkpoints, the layer's maths written out, Auto* against
transformers' own Mamba, FLOPs, TP refusal); the model-level checks every family passes are in
test_conformance.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from fla.layers.mamba import Mamba
from fla.models import MambaConfig, MambaForCausalLM, MambaModel, SambaConfig, SambaForCausalLM
from fla.models.flops import SCAN_OPS
from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.families import FLA060_PATH
from tests.harness import assert_close, tol

ROOT = Path(__file__).resolve().parents[3]


def test_config_defaults_are_fla060():
    mamba = MambaConfig()
    expected = dict(
        vocab_size=32000, hidden_size=2048, state_size=16, num_hidden_layers=48, norm_eps=1e-5, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, expand=2, intermediate_size=4096, conv_kernel=4, use_bias=False,
        use_conv_bias=True, hidden_act="silu", initializer_range=0.02, residual_in_fp32=False, dt_rank=128,
        dt_scale=1.0, dt_min=0.001, dt_max=0.1, dt_init_scheme="random", dt_init_floor=1e-4,
        rescale_prenorm_residual=False, use_cache=True, fuse_norm=True, fuse_cross_entropy=True,
        fuse_linear_cross_entropy=False, use_l2warp=False, tie_word_embeddings=False,
    )  # fmt: skip
    assert {k: getattr(mamba, k) for k in expected} == expected
    samba = SambaConfig()
    expected = dict(
        hidden_size=2304, state_size=16, num_hidden_layers=18, norm_eps=1e-5, pad_token_id=0, expand=2,
        intermediate_size=4608, conv_kernel=4, hidden_act="swish", time_step_rank=144, time_step_scale=1.0,
        time_step_min=0.001, time_step_max=0.1, time_step_init_scheme="random", time_step_floor=1e-4,
        max_position_embeddings=2048, hidden_ratio=4, vocab_size=32000, attnres_block_size=None,
    )  # fmt: skip
    assert {k: getattr(samba, k) for k in expected} == expected
    assert samba.attn["layers"] == [1, 3, 5, 7, 9, 11, 13, 15, 17] and samba.attn["window_size"] == 2048
    assert SambaConfig(num_hidden_layers=4).attn["layers"] == [1, 3]  # fla cuts its default to the depth
    assert SambaConfig(attn=None).attn is None


def test_samba_legacy_default_attn_is_cut_to_the_depth(tmp_path):
    """Older fla saved Samba's full default attn (layers up to 17) whatever the depth; it loads cut to the depth."""
    legacy = {"model_type": "samba", "transformers_version": "4.50.0", "hidden_size": 72, "num_hidden_layers": 4,
              "attn": {"layers": [1, 3, 5, 7, 9, 11, 13, 15, 17], "num_heads": 18, "num_kv_heads": 18,
                       "qkv_bias": False, "window_size": 2048, "rope_theta": 10000.0}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    assert AutoConfig.from_pretrained(tmp_path).attn["layers"] == [1, 3]
    legacy["attn"]["num_heads"] = 4  # not fla's default: validated as written
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match=r"attn\['layers'\] has indices \[5, 7, 9, 11, 13, 15, 17\]"):
        AutoConfig.from_pretrained(tmp_path)


def test_auto_classes_build_ours_not_transformers_mamba():
    """transformers registers its own ``mamba``; after ``import fla`` the Auto* classes build fla's."""
    import transformers

    config = AutoConfig.for_model("mamba", hidden_size=32, num_hidden_layers=1, vocab_size=50)
    assert type(config) is MambaConfig and not isinstance(config, transformers.MambaConfig)
    model = AutoModelForCausalLM.from_config(config)
    assert type(model) is MambaForCausalLM and not isinstance(model, transformers.MambaForCausalLM)
    assert type(AutoModel.from_config(config)) is MambaModel
    assert (
        type(AutoModelForCausalLM.from_config(AutoConfig.for_model("samba", hidden_size=36, num_hidden_layers=2)))
        is SambaForCausalLM
    )


def _written_out(layer: Mamba, x: torch.Tensor) -> torch.Tensor:
    """fla 0.6.0's ``Mamba.slow_forward`` (no cache), step by step in float64."""
    W = {n: p.detach().double() for n, p in layer.named_parameters()}
    x = x.double()
    xz = x @ W["in_proj.weight"].T
    h, z = xz.chunk(2, -1)  # [B, T, Di]
    T, K = h.shape[1], layer.conv_kernel_size
    padded = F.pad(h, (0, 0, K - 1, 0))
    h = sum(padded[:, k : k + T] * W["conv1d.weight"][:, 0, k] for k in range(K)) + W["conv1d.bias"]
    h = F.silu(h)
    dt, B, C = (h @ W["x_proj.weight"].T).split([layer.dt_rank, layer.ssm_state_size, layer.ssm_state_size], -1)
    dt = F.softplus(dt @ W["dt_proj.weight"].T + W["dt_proj.bias"])
    A = -W["A_log"].exp()
    state = torch.zeros(x.shape[0], *A.shape, dtype=torch.float64)
    ys = []
    for t in range(T):
        state = torch.exp(A * dt[:, t, :, None]) * state + (dt[:, t] * h[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((state * C[:, t, None, :]).sum(-1))
    y = (torch.stack(ys, 1) + h * W["D"]) * F.silu(z)
    return y @ W["out_proj.weight"].T


def test_layer_matches_fla060_maths():
    torch.manual_seed(0)
    layer = Mamba(hidden_size=24, state_size=5, conv_kernel=3, intermediate_size=40, layer_idx=0)
    with torch.no_grad():
        layer.D.uniform_(0.5, 1.5)
        layer.A_log.add_(torch.randn_like(layer.A_log) * 0.1)
    x = torch.randn(2, 37, 24)
    for train in (True, False):  # chunk op, then the token-by-token op
        out, _, _ = layer.train(train)(x)
        assert_close("out", _written_out(layer, x), out, tol(torch.float32, 20))


def test_init_is_fla060s():
    layer = Mamba(hidden_size=64, state_size=6, intermediate_size=128, dt_rank=8)
    assert torch.equal(layer.A_log, torch.arange(1, 7).float().log().expand(128, 6))
    assert torch.equal(layer.D, torch.ones(128))
    assert layer.dt_proj.weight.abs().max() <= 8**-0.5
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    with pytest.raises(ValueError, match="dt_init='bogus' is not one of"):
        Mamba(hidden_size=64, dt_init="bogus")
    with pytest.raises(ValueError, match="hidden_act='gelu' is not one of"):
        Mamba(hidden_size=64, hidden_act="gelu")


def test_state_spaces_embedding_name_loads():
    model = MambaModel(MambaConfig(hidden_size=32, num_hidden_layers=1, vocab_size=50))
    state = {("embedding.weight" if k == "embeddings.weight" else k): v.clone() for k, v in model.state_dict().items()}
    state["embedding.weight"].normal_()
    model.load_state_dict(state)
    assert torch.equal(model.embeddings.weight, state["embedding.weight"])


def test_flops_count_the_scan_as_elementwise_work():
    config = AutoConfig.for_model("mamba", hidden_size=64, num_hidden_layers=3, intermediate_size=96, state_size=8)
    model = AutoModelForCausalLM.from_config(config)
    dense = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    assert model.flops_per_token(2048) == 6 * dense + 3 * 3 * SCAN_OPS * 96 * 8
    samba = AutoModelForCausalLM.from_config(AutoConfig.for_model("samba", hidden_size=72, num_hidden_layers=2))
    assert samba.flops_per_token(4096) > samba.flops_per_token(1024)  # the attention layer grows with the window


@pytest.mark.parametrize("model_type", ["mamba", "samba"])
def test_tensor_parallel_is_refused_clearly(model_type):
    config = AutoConfig.from_pretrained(ROOT / "configs" / f"{model_type}_tiny.json")
    with pytest.raises(ConfigError, match=f"TP not supported for {model_type}"):
        check_tp_supported(config, 2)


@pytest.mark.slow  # ~20 s: two subprocesses, fla 0.6.0's Mamba on CPU
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
    script = str(Path(__file__).with_name("fla060_ssm_compat.py"))
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "TRITON_INTERPRET": "1"}
    saved = subprocess.run([sys.executable, script, "save", str(tmp_path)], env=env, capture_output=True, text=True)
    assert saved.returncode == 0, saved.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, script, "load", str(tmp_path)], env=env, capture_output=True, text=True)
    print(loaded.stdout)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr[-3000:]
