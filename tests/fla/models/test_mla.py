"""MLA-specific model checks: fla 0.6.0 config defaults, config errors, the TP plan (and its refusal), FLOPs, and
(slow) parameter counts and logits against fla 0.6.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fla.layers.mla import MultiheadLatentAttention
from fla.models import MLAConfig, MLAForCausalLM
from fla.models.flops import TokenMixer
from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.families import BY_TYPE, CONFIGS, FLA060_PATH

FAMILY = BY_TYPE["mla"]


def test_config_defaults_are_fla060s():
    c = MLAConfig()
    expected = dict(
        hidden_size=2048, num_hidden_layers=24, num_heads=16, q_lora_rank=64, qk_rope_head_dim=64, kv_lora_rank=512,
        v_head_dim=128, qk_nope_head_dim=128, qk_head_dim=192, window_size=None, rope_theta=10000.0,
        max_position_embeddings=2048, hidden_ratio=4, intermediate_size=None, hidden_act="swish",
        initializer_range=0.02, elementwise_affine=True, norm_eps=1e-6, use_cache=True, pad_token_id=None,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, fuse_norm=True, fuse_swiglu=True,
        fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False, vocab_size=32000,
        attnres_block_size=None,
    )  # fmt: skip
    assert {k: getattr(c, k) for k in expected} == expected
    assert MLAConfig.model_type == "mla" and not hasattr(c, "attn")


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(qk_head_dim=100), "qk_head_dim=100 != qk_nope_head_dim \\+ qk_rope_head_dim = 128 \\+ 64"),
        (dict(qk_rope_head_dim=63, qk_head_dim=None), "qk_rope_head_dim=63 must be even"),
        (dict(kv_lora_rank=0), "kv_lora_rank=0 must be a positive integer"),
        (dict(q_lora_rank=-1), "q_lora_rank=-1 must be a positive integer or null"),
        (dict(window_size=0), "window_size=0 must be a positive integer or null"),
        (dict(rope_theta=None), "rope_theta=None must be a positive number"),
    ],
)
def test_bad_config_fails_at_construction(fields, match):
    with pytest.raises(ValueError, match=match):
        MLAConfig(**fields)


def test_blocks_hold_the_fla_layer_with_the_config_widths():
    model = FAMILY.model("window_no_q_lora")
    attn = model.model.layers[1].attn
    assert isinstance(attn, MultiheadLatentAttention) and attn.layer_idx == 1
    assert (attn.q_lora_rank, attn.window_size, attn.v_head_dim, attn.kv_lora_rank) == (None, 4, 20, 20)
    assert isinstance(attn.q_proj, torch.nn.Linear)


def test_tensor_parallel_plan_splits_heads_and_refuses_a_full_q_projection():
    plan = MLAForCausalLM.tensor_parallel_plan
    attn = plan.regions["attn"]
    assert attn.col == ("q_proj.2", "kv_proj.2") and attn.row == ("o_proj",) and attn.divide == ("num_heads",)
    check_tp_supported(MLAConfig.from_pretrained(CONFIGS / "mla_cpu.json"), 2)
    with pytest.raises(ConfigError, match="does not support q_lora_rank = None"):
        check_tp_supported(MLAConfig(q_lora_rank=None), 2)
    with pytest.raises(ConfigError, match="num_heads = 6 of the model config is not divisible"):
        check_tp_supported(MLAConfig(num_heads=6), 4)


def test_flops_count_scores_over_qk_width_and_outputs_over_v_width():
    c = FAMILY.config("window_no_q_lora")  # Dn + Dr = 16, Dv = 20, window 4
    assert MLAForCausalLM.token_mixer(c) == TokenMixer("softmax", 4, 16, 20, 4)
    model = MLAForCausalLM(c)
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    for seq_len in (2, 2048):
        attn = 6.0 * 4 * (16 + 20) * min(seq_len, 4)
        assert model.flops_per_token(seq_len) == pytest.approx(6.0 * n + 2 * attn)


# ---- fla 0.6.0 ------------------------------------------------------------------------------------------------------


def _fla060_available():
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (see test_fla060_linear_compat.py)")


_COUNT = """
import json, sys, torch
import fla
assert fla.__version__ == "0.6.0", fla.__file__
import fla.layers.mla as fla_mla
fla_mla.flash_attn_func = fla_mla.flash_attn_func or object()  # construction-time check only
from fla.models import MLAConfig, MLAForCausalLM
out = {}
for path in sys.argv[1:]:
    fields = {k: v for k, v in json.load(open(path)).items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        model = MLAForCausalLM(MLAConfig(**fields))
    out[path] = sum(p.numel() for p in model.parameters())
print(json.dumps(out))
"""


@pytest.mark.slow  # ~20 s: imports fla 0.6.0 in a subprocess
def test_parameter_counts_equal_fla060(tmp_path):
    """configs/mla_*.json: fla 0.6.0's model (meta device, own process) has exactly our parameter count."""
    _fla060_available()
    paths = sorted(str(p) for p in CONFIGS.glob("mla_*.json"))
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _COUNT, *paths]  # run outside the repository: its fla must not shadow fla 0.6.0
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for path in paths:
        config = MLAConfig.from_pretrained(path)
        with torch.device("meta"):
            ours = sum(p.numel() for p in MLAForCausalLM(config).parameters())
        assert ours == theirs[path], Path(path).name


_LOGITS = """
import sys, torch
side, out = sys.argv[1], sys.argv[2]
BASE = dict(hidden_size=72, num_hidden_layers=2, num_heads=4, intermediate_size=96, vocab_size=101,
            fuse_cross_entropy=False, initializer_range=0.1, q_lora_rank=24, kv_lora_rank=20, qk_nope_head_dim=10,
            qk_rope_head_dim=6, qk_head_dim=16, v_head_dim=12)
CASES = {
    "plain": {},
    "full_q_window_unfused_tied": dict(q_lora_rank=None, window_size=5, fuse_norm=False, tie_word_embeddings=True),
    "equal_widths_theta": dict(v_head_dim=16, rope_theta=500.0),
}
from fla.models import MLAConfig, MLAForCausalLM
import fla
assert (fla.__version__ == "0.6.0") == (side == "save"), (side, fla.__file__)
if side == "save":
    sys.path.insert(0, sys.argv[3])
    import triton.runtime.autotuner as autotuner
    import fla.layers.mla as fla_mla
    from fla060_compat import sdpa_flash_attn_func
    autotuner.Autotuner._bench = lambda self, *args, config=None, **kwargs: [0.0, 0.0, 0.0]
    fla_mla.flash_attn_func = sdpa_flash_attn_func
for name, fields in CASES.items():
    torch.manual_seed(0)
    x = torch.randint(3, 101, (2, 29))
    model = MLAForCausalLM(MLAConfig(**{**BASE, **fields})).eval()
    if side == "save":
        with torch.no_grad():  # non-trivial norm weights (they init to ones)
            for n, p in model.named_parameters():
                if p.dim() == 1:
                    p.uniform_(0.5, 1.5)
            torch.save({"sd": model.state_dict(), "logits": model(x).logits, "x": x}, f"{out}/{name}.pt")
    else:
        ref = torch.load(f"{out}/{name}.pt")
        model.load_state_dict(ref["sd"], strict=True)
        with torch.no_grad():
            logits = model(ref["x"]).logits
        err = float((logits - ref["logits"]).norm() / ref["logits"].norm())
        print(name, err)
        assert err < 1e-5, (name, err)
"""


# fla 0.6.0 runs on CPU in the Triton interpreter (its RMSNorm and RoPE kernels); flash-attn, which its MLA needs,
# is replaced by the SDPA stand-in of fla060_compat.py (everything else is fla 0.6.0's own code).
@pytest.mark.slow  # ~30 s on 2 cores
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """fla 0.6.0 builds, saves and runs MLA models (own process); ours loads them strictly: same logits."""
    _fla060_available()
    here, root = Path(__file__).parent, Path(__file__).resolve().parents[3]
    for side, path in (("save", FLA060_PATH), ("load", str(root))):
        env = {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-c", _LOGITS, side, str(tmp_path), str(here)]
        run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{side}:\n{run.stdout}\n{run.stderr[-4000:]}"
    print(run.stdout)
