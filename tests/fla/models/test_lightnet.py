"""LightNet specifics (heads, no TP plan, FLOPs, fla 0.6.0 logits); the model-level checks every family passes
are in test_conformance.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from fla.layers.lightnet import LightNetAttention
from fla.models import LightNetConfig
from flame.parallelize import check_tp_supported
from tests.fla.models.families import BY_TYPE, CONFIGS, FLA060_PATH

LIGHTNET = BY_TYPE["lightnet"]


def test_config_resolves_heads_as_fla():
    config = LightNetConfig(hidden_size=256)
    assert (config.num_heads, config.expand_ratio, config.gate_low_rank_dim) == (2, 128, 128)
    config = LightNetConfig(hidden_size=256, num_heads=8, expand_ratio=None)
    assert (config.num_heads, config.expand_ratio) == (8, 32)
    assert LightNetConfig(hidden_size=256, num_heads=8, expand_ratio=64).num_heads == 8  # both kept, as in fla
    with pytest.raises(ValueError, match="one of num_heads and expand_ratio must be given"):
        LightNetConfig(hidden_size=256, expand_ratio=None)
    with pytest.raises(ValueError, match="hidden_size=100 is not a multiple of num_heads=3"):
        LightNetConfig(hidden_size=100, expand_ratio=32)
    with pytest.raises(ValueError, match="attn_mode"):
        LightNetConfig(hidden_size=256, attn_mode="parallel")
    with pytest.raises(ValueError, match="gate_low_rank_dim"):
        LightNetConfig(hidden_size=256, gate_low_rank_dim=0)


def test_fla_config_loads(tmp_path):
    """A config as fla 0.6.0 saves it loads and builds fla's sizes."""
    fields = dict(
        attn_mode="chunk", bos_token_id=1, eos_token_id=2, expand_ratio=128, fuse_cross_entropy=True, fuse_norm=True,
        hidden_act="swish", hidden_ratio=4, hidden_size=1024, initializer_range=0.02, intermediate_size=None,
        model_type="lightnet", num_heads=None, num_hidden_layers=24, norm_eps=1e-06, tie_word_embeddings=False,
        use_cache=True, vocab_size=32000, gate_low_rank_dim=128, attnres_block_size=None,
    )  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is LightNetConfig and config.num_heads == 8


def test_flops_token_mixer():
    config = AutoConfig.from_pretrained(CONFIGS / "lightnet_340M.json")
    mixer = type(LIGHTNET.model()).token_mixer(config)
    assert (mixer.kind, mixer.heads, mixer.key_dim, mixer.value_dim) == ("linear", 8, 128, 128)


def test_tensor_parallel_plan_splits_the_full_width_norm():
    """The output RMSNorm spans all heads: the plan splits it with the heads (``full_norms``, an all-reduced RMS;
    the conformance suite's TP check compares TP=2 with one rank)."""
    from fla.models.tp_plan import TPRegion
    from flame.parallelize import tensor_parallel_plan

    config = AutoConfig.from_pretrained(LIGHTNET.trainer_json)
    check_tp_supported(config, 2)
    region = tensor_parallel_plan(config).regions["attn"]
    assert isinstance(region, TPRegion) and "g_norm" in region.full_norms


def test_layer_in_hybrid_blocks_only_where_not_attention():
    model = LIGHTNET.model("hybrid")
    kinds = [type(block.attn).__name__ for block in model.model.layers]
    assert kinds == ["LightNetAttention", "Attention"] and isinstance(model.model.layers[0].attn, LightNetAttention)


def test_padded_batch_restarts_the_normalizer():
    """Left padding is dropped before the op: a padded row gives the logits of the same row alone."""
    torch.manual_seed(0)
    model = LIGHTNET.model().eval()
    ids = torch.randint(3, 100, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], 1)
    with torch.no_grad():
        alone = model(ids).logits
        both = model(padded, attention_mask=mask).logits[:, 4:]
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-4)


# ---- fla 0.6.0 logits ------------------------------------------------------------------------------------

_DRIVER = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[3])
import fla060_linear_compat as m
base = dict(hidden_size=128, num_hidden_layers=3, expand_ratio=32, num_heads=None, gate_low_rank_dim=16,
            vocab_size=512, fuse_cross_entropy=False, initializer_range=0.1)
m.CASES = {
    "lightnet": ("lightnet", dict(base)),
    "lightnet_unfused_tied": ("lightnet", dict(base, fuse_norm=False, tie_word_embeddings=True)),
    "lightnet_hybrid": ("lightnet", dict(base, attn={"layers": [1], "num_heads": 4})),
}
if sys.argv[1] == "save" and not torch.cuda.is_available():
    # fla 0.6.0's fused_additive_gate kernel fails in the Triton interpreter (a None pointer argument): on CPU its
    # documented maths stands in for that one kernel (dense inputs, no state); the rest of its model runs as is
    import fla.ops.lightnet.chunk as fla_chunk
    import fla.ops.lightnet.fused_recurrent as fla_recurrent

    def additive_gate(x, initial_state=None, cu_seqlens=None):
        assert initial_state is None and cu_seqlens is None
        z = torch.logcumsumexp(x.float(), 1)
        g = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1] - z[:, 1:]], 1)
        return torch.exp(x.float() - z).to(x.dtype), g.to(x.dtype), z[:, -1:]

    fla_chunk.fused_additive_gate = fla_recurrent.fused_additive_gate = additive_gate
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
sys.exit(m.save(out) if sys.argv[1] == "save" else m.load(out, require_logits=True))
"""


@pytest.mark.slow  # fla 0.6.0 in the Triton interpreter
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """fla 0.6.0 builds, saves and runs LightNet models (own process); ours loads them: same keys, same logits.

    On CPU fla 0.6.0's gate-normalization kernel is replaced by its formula (see the driver)."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (see test_fla060_linear_compat.py)")
    here, root = Path(__file__).parent, Path(__file__).resolve().parents[3]
    runs = []
    for side, path in (("save", FLA060_PATH), ("load", str(root))):
        env = {**os.environ, "PYTHONPATH": path}
        cmd = [sys.executable, "-c", _DRIVER, side, str(tmp_path / "out"), str(here)]
        runs.append(subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200))
        assert runs[-1].returncode == 0, f"{side}:\n{runs[-1].stdout}\n{runs[-1].stderr[-4000:]}"
    print(runs[-1].stdout)
