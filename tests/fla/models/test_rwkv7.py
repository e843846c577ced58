"""RWKV7 model-level behaviour beyond the conformance suite: fla 0.6.0's checkpoints load with the same logits,
fla's config defaults, the FLOPs rule, and the refusal of tensor parallelism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fla.models.flops import TokenMixer
from fla.models.rwkv7 import RWKV7Config, RWKV7ForCausalLM
from tests.fla.models.families import FLA060_PATH

_DRIVER = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[3])
import fla060_linear_compat as m
base = dict(hidden_size=64, num_hidden_layers=2, head_dim=16, decay_low_rank_dim=8, gate_low_rank_dim=16,
            a_low_rank_dim=8, v_low_rank_dim=8, vocab_size=512, fuse_cross_entropy=False, use_l2warp=False,
            initializer_range=0.1)
m.CASES = {
    "rwkv7": ("rwkv7", dict(base)),
    "rwkv7_unfused_tied_postnorm": ("rwkv7", dict(base, fuse_norm=False, tie_word_embeddings=True, norm_first=False)),
}
m.INTERPRET_SEQ_LEN = 40  # fla 0.6.0's decode path (fused_mul_recurrent_rwkv7) below 64 tokens
if sys.argv[1] == "save":  # fla zeroes o_proj, the FFN's value and the LoRAs' first matrices and
    # sets r_k, k_k, k_a to constants: make them count
    build = m._build_fla060

    def _build_randomized(config):
        model, mode, error = build(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("o_proj.weight", "ffn.value.weight", "lora.0.weight")):
                    p.normal_(0, 0.2)
                elif name.endswith(("r_k", "k_k", "k_a")):
                    p.normal_(0, 0.5)
        return model, mode, error

    m._build_fla060 = _build_randomized
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
sys.exit(m.save(out) if sys.argv[1] == "save" else m.load(out, require_logits=True))
"""


@pytest.mark.slow  # fla 0.6.0 in the Triton interpreter
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """fla 0.6.0 builds, saves and runs RWKV7 models (own process; o_proj, the FFN value and the LoRAs randomized);
    ours loads them: same keys, same logits."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (see test_fla060_linear_compat.py)")
    here, root = Path(__file__).parent, Path(__file__).resolve().parents[3]
    for side, path in (("save", FLA060_PATH), ("load", str(root))):
        env = {**os.environ, "PYTHONPATH": path}
        cmd = [sys.executable, "-c", _DRIVER, side, str(tmp_path / "out"), str(here)]
        run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{side}:\n{run.stdout}\n{run.stderr[-4000:]}"


def test_config_defaults_are_fla060s():
    config = RWKV7Config(num_hidden_layers=3)
    assert (config.hidden_size, config.head_dim, config.num_heads, config.hidden_ratio) == (2048, 64, 32, 4)
    assert (config.decay_low_rank_dim, config.gate_low_rank_dim, config.a_low_rank_dim, config.v_low_rank_dim) == (
        64, 128, 64, 16,
    )  # fmt: skip
    assert config.value_dim == [2048] * 3 and config.hidden_act == "sqrelu" and config.norm_eps == 1e-5
    assert config.norm_first and config.norm_bias and config.fuse_norm and config.attn_mode == "chunk"
    assert RWKV7Config(hidden_size=64, num_heads=4, head_dim=None, num_hidden_layers=1).head_dim == 16
    assert RWKV7Config(hidden_size=64, num_hidden_layers=2, value_dim=128).value_dim == [128, 128]
    with pytest.raises(ValueError, match=r"value_dim=96: every width must be a multiple of hidden_size=64"):
        RWKV7Config(hidden_size=64, num_hidden_layers=2, value_dim=96)
    with pytest.raises(ValueError, match=r"head_dim=16 \* num_heads=2 != hidden_size=64"):
        RWKV7Config(hidden_size=64, head_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="head_dim and num_heads are both null"):
        RWKV7Config(head_dim=None, num_heads=None)


def test_flops_and_tensor_parallel_plan():
    config = RWKV7Config(hidden_size=256, head_dim=64, num_hidden_layers=2)
    assert RWKV7ForCausalLM.token_mixer(config) == TokenMixer("delta", 4, 64, 64)
    # v_first crosses the blocks as each rank's share of layer 0's values: a local input of the later regions
    # (the conformance suite checks the split model against the whole one, gradients included)
    assert RWKV7ForCausalLM.tensor_parallel_plan.regions["attn"].local_inputs == ("v_first",)
