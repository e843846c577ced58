"""Rodimus-specific model checks: fla 0.6.0 config defaults, block maths (two-hop residual of rodimus_plus, no MLP in
rodimus blocks), SW-SKA's own cache slot, init, FLOPs, parameter counts and logits against fla 0.6.0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fla.layers.rodimus import RodimusAttention, SlidingWindowSharedKeyAttention
from fla.models import FLACache, RodimusConfig, RodimusForCausalLM
from fla.models.flops import TokenMixer
from tests.fla.models.families import BY_TYPE, CONFIGS, FLA060_PATH, ids
from tests.harness import DEVICE, assert_close, tol

FAMILY = BY_TYPE["rodimus"]


def test_config_defaults_are_fla060s():
    c = RodimusConfig()
    expected = dict(
        block_type="rodimus_plus", hidden_size=2048, num_hidden_layers=24, attn_mode="chunk", residual_in_fp32=True,
        block_residual_in_fp32=False, expand_ratio=64, input_gate_low_rank="auto", use_short_conv=True, conv_size=4,
        hidden_ratio=4 / 3, intermediate_size=None, hidden_act="swish", max_position_embeddings=2048, norm_eps=1e-5,
        k_norm_eps=None, attn=None, ska_attn=None, use_cache=True, pad_token_id=None, bos_token_id=126080,
        eos_token_id=126081, tie_word_embeddings=True, initializer_range=0.02, fuse_norm=True, fuse_swiglu=True,
        fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False, vocab_size=126464,
    )  # fmt: skip
    assert {k: getattr(c, k) for k in expected} == expected
    # fla fills the SW-SKA defaults (and only those)
    assert RodimusConfig(ska_attn={"num_heads": 4}).ska_attn == dict(
        num_heads=4, qkv_bias=False, qk_norm=False, window_size=1024, rope_theta=10000.0
    )
    assert RodimusConfig(ska_attn={"num_heads": 4, "window_size": None}).ska_attn["window_size"] is None


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(block_type="mamba"), "block_type='mamba' is not one of"),
        (dict(attn_mode="parallel"), "attn_mode='parallel' is not one of"),
        (dict(expand_ratio=0), "expand_ratio=0 must be a positive integer"),
        (dict(input_gate_low_rank=-2), "input_gate_low_rank must be 'auto' or a positive int, got -2"),
        (dict(ska_attn=[4]), r"ska_attn must be null or a dict, got \[4\]"),
        (dict(ska_attn={"window_size": 8}), "ska_attn.num_heads=None must be a positive integer"),
        (dict(ska_attn={"num_heads": 5}), "hidden_size=64 is not a multiple of ska_attn.num_heads=5"),
        (dict(ska_attn={"num_heads": 4, "window_size": 0}), "ska_attn.window_size=0 must be a positive integer"),
        (dict(ska_attn={"num_heads": 4, "heads": 2}), r"ska_attn has unknown fields \['heads'\]"),
        (dict(ska_attn={"num_heads": 64}), r"ska_attn.rope_theta=10000.0 needs an even head dim, got 64 // 64 = 1"),
        (dict(k_norm_eps=-1.0), "k_norm_eps=-1.0 must be a positive number or null"),
    ],
)
def test_bad_config_fails_at_construction(fields, match):
    with pytest.raises(ValueError, match=match) as info:
        RodimusConfig(hidden_size=64, num_hidden_layers=2, vocab_size=128, **fields)
    assert "\n" not in str(info.value)


def test_rodimus_plus_without_ska_attn_is_refused_at_model_build():
    """fla's default config (rodimus_plus, ska_attn=None) constructs (transformers diffs against it) and saves;
    a model from it is refused with a ValueError, not fla's TypeError."""
    config = RodimusConfig(hidden_size=64, num_hidden_layers=2, vocab_size=128)
    assert "ska_attn" in config.to_json_string()
    with pytest.raises(ValueError, match="block_type='rodimus_plus' needs ska_attn"):
        RodimusForCausalLM(config)
    RodimusForCausalLM(RodimusConfig(hidden_size=64, num_hidden_layers=2, vocab_size=128, block_type="rodimus"))


def test_block_parameters_by_type():
    plus = FAMILY.model()
    names = {n.split(".", 3)[3].split(".")[0] for n, _ in plus.named_parameters() if n.startswith("model.layers.0.")}
    assert names == {"mixer_norm", "mixer", "ska_attn_norm", "ska_attn", "mlp_norm", "mlp"}
    plain = FAMILY.model("rodimus_block")
    names = {n.split(".", 3)[3].split(".")[0] for n, _ in plain.named_parameters() if n.startswith("model.layers.1.")}
    assert names == {"mixer_norm", "mixer"}  # no MLP in a rodimus block (fla's)
    hybrid = FAMILY.model("hybrid")
    names = {n.split(".", 3)[3].split(".")[0] for n, _ in hybrid.named_parameters() if n.startswith("model.layers.1.")}
    assert names == {"attn_norm", "attn", "mlp_norm", "mlp"}
    assert plus.model.layers[0].mlp.intermediate_size == 96
    # fla's MLP width without intermediate_size: align_multiple(int(4/3 * hidden), 8)
    c = RodimusConfig(hidden_size=100, num_hidden_layers=1, vocab_size=10, block_type="rodimus_plus")
    c.ska_attn = {"num_heads": 2, "qkv_bias": False, "qk_norm": False, "window_size": 8, "rope_theta": 1e4}
    assert RodimusForCausalLM(c).model.layers[0].mlp.intermediate_size == 136


def _rms(x, norm):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


@pytest.mark.parametrize("fuse_norm", [True, False])
def test_rodimus_plus_block_is_the_two_hop_residual(fuse_norm):
    """x1 = x + Rodimus(n1(x)); out = x1 + MLP(n3(x1 + SKA(n2(x1)))): SKA's output reaches the stream via the MLP."""
    model = FAMILY.model(fuse_norm=fuse_norm).double().train()
    block = model.model.layers[0]
    x = torch.randn(2, 17, 72, device=DEVICE, dtype=torch.float64)
    x1 = x + block.mixer(_rms(x, block.mixer_norm))[0]
    ska = block.ska_attn(_rms(x1, block.ska_attn_norm))[0]
    expected = x1 + block.mlp(_rms(x1 + ska, block.mlp_norm))
    assert_close("block", expected, block(x)[0], tol(torch.float64, 1e3))


def test_ska_has_its_own_cache_slot():
    """Layer i's Rodimus state is slot i; its SW-SKA keys / values slot L + i (each counts its own tokens)."""
    model = FAMILY.model().eval()
    L = model.config.num_hidden_layers
    assert [layer.ska_attn.layer_idx for layer in model.model.layers] == [L + i for i in range(L)]
    x = ids(2, 13)
    with torch.no_grad():
        cache = model(x, use_cache=True).past_key_values
    assert isinstance(cache, FLACache) and len(cache.layers) == 2 * L
    for i in range(L):
        assert cache.get_seq_length(i) == cache.get_seq_length(L + i) == 13
        assert cache[i]["recurrent_state"].shape == (2, 1, 12, 144) and cache[i]["attn_state"] is None
        k, v = cache[L + i]["attn_state"]
        assert k.shape == v.shape == (2, 8, 4, 18)  # the window (8) of keys, repeated to the 4 heads
        assert torch.equal(k[:, :, 0], k[:, :, 3])  # one shared key


def test_init_follows_fla():
    torch.manual_seed(0)
    model = FAMILY.model(initializer_range=0.02)
    mixer = model.model.layers[0].mixer
    dt = F.softplus(mixer.g_gate_proj.bias)
    assert (dt >= 1e-3 - 1e-6).all() and (dt <= 0.1 + 1e-6).all()
    tau = torch.sigmoid(mixer.tau_gate_proj.bias)
    assert (tau >= 1 / 16 - 1e-6).all() and (tau <= 0.9 + 1e-6).all()
    assert torch.equal(mixer.residual_weight, torch.ones_like(mixer.residual_weight))
    assert mixer.residual_weight.dtype == torch.float32
    assert torch.equal(mixer.i_gate_proj[1].bias, torch.zeros_like(mixer.i_gate_proj[1].bias))
    bound = 2**-2.5 * (6 / (144 + 12)) ** 0.5  # xavier-uniform, gain 2 ** -2.5
    assert mixer.g_gate_proj.weight.abs().max() <= bound


def test_flops_count_the_rodimus_state_and_the_ska_window():
    c = FAMILY.config()
    assert RodimusForCausalLM.token_mixer(c) == TokenMixer("linear", 1, 12, 144)
    model = RodimusForCausalLM(c)
    plain = RodimusForCausalLM(FAMILY.config(ska_attn=None, block_type="rodimus"))
    ska = TokenMixer("softmax", 4, 18, 18, 8).flops_per_token(2048)
    extra = model.flops_per_token(2048) - 6.0 * (sum(p.numel() for p in model.parameters()) - 101 * 72)
    assert extra == pytest.approx(2 * (TokenMixer("linear", 1, 12, 144).flops_per_token(2048) + ska))
    assert plain.flops_per_token(2048) < model.flops_per_token(2048)


def test_no_tensor_parallel_plan():
    assert RodimusForCausalLM.tensor_parallel_plan is None


def test_layers_are_fla_classes():
    block = FAMILY.model().model.layers[0]
    assert isinstance(block.mixer, RodimusAttention) and isinstance(block.ska_attn, SlidingWindowSharedKeyAttention)
    assert block.mixer.block_type == "rodimus_plus"


# ---- fla 0.6.0 (own process) ------------------------------------------------------------------------------

_COUNT = """
import json, sys, torch
import fla
assert fla.__version__ == "0.6.0", f"fla {fla.__version__} from {fla.__file__}, not fla 0.6.0"
from fla.models import RodimusConfig, RodimusForCausalLM
out = {}
for path in sys.argv[1:]:
    fields = {k: v for k, v in json.load(open(path)).items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        model = RodimusForCausalLM(RodimusConfig(**fields))
    out[path] = sum(p.numel() for p in model.parameters())
print(json.dumps(out))
"""


def _fla060_available():
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (see test_fla060_linear_compat.py)")


@pytest.mark.slow  # ~20 s: imports fla 0.6.0 in a subprocess
def test_parameter_counts_equal_fla060(tmp_path):
    """configs/rodimus_*.json: fla 0.6.0's model (meta device, own process) has exactly our parameter count."""
    _fla060_available()
    paths = sorted(str(p) for p in CONFIGS.glob("rodimus_*.json"))
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "OMP_NUM_THREADS": "1"}
    # cwd outside the repository: `python -c` puts the working directory first on sys.path, ahead of FLA060_PATH
    cmd = [sys.executable, "-c", _COUNT, *paths]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    for path in paths:
        fields = {
            k: v for k, v in json.loads(Path(path).read_text()).items() if k not in ("model_type", "architectures")
        }
        with torch.device("meta"):
            ours = sum(p.numel() for p in RodimusForCausalLM(RodimusConfig(**fields)).parameters())
        assert ours == theirs[path], Path(path).name


_LOGITS = """
import sys, torch
side, out = sys.argv[1], sys.argv[2]
BASE = dict(hidden_size=72, num_hidden_layers=3, intermediate_size=96, expand_ratio=12, vocab_size=101,
            fuse_cross_entropy=False, initializer_range=0.1, residual_in_fp32=False, attn_mode="fused_recurrent",
            bos_token_id=1, eos_token_id=2)
SKA = {"num_heads": 4, "window_size": 8}
CASES = {
    "plus": dict(ska_attn=SKA),
    "plus_qknorm_bias_noconv": dict(ska_attn={"num_heads": 2, "window_size": 5, "qk_norm": True, "qkv_bias": True},
                                    use_short_conv=False),
    "rodimus_conv3": dict(block_type="rodimus", conv_size=3),
    "hybrid_unfused": dict(ska_attn=SKA, fuse_norm=False, attn={"layers": [1], "num_heads": 2, "num_kv_heads": 1}),
}
from fla.models import RodimusConfig, RodimusForCausalLM
if side == "save":
    sys.path.insert(0, sys.argv[3])
    import triton.runtime.autotuner as autotuner
    import fla.layers.rodimus as fla_rodimus, fla.layers.attn as fla_attn
    from fla060_compat import sdpa_flash_attn_func
    autotuner.Autotuner._bench = lambda self, *args, config=None, **kwargs: [0.0, 0.0, 0.0]
    fla_rodimus.flash_attn_func = fla_attn.flash_attn_func = sdpa_flash_attn_func
    fla_rodimus.autocast_to_fp16 = lambda x: x  # flash-attn takes 16-bit inputs only; the SDPA stand-in runs fp32
for name, fields in CASES.items():
    torch.manual_seed(0)
    x = torch.randint(3, 101, (2, 41))
    model = RodimusForCausalLM(RodimusConfig(**BASE, **fields)).eval()
    if side == "save":
        with torch.no_grad():
            torch.save({"sd": model.state_dict(), "logits": model(x).logits, "x": x}, f"{out}/{name}.pt")
    else:
        ref = torch.load(f"{out}/{name}.pt")
        model.load_state_dict(ref["sd"], strict=True)
        with torch.no_grad():
            logits = model(ref["x"]).logits
        err = float((logits - ref["logits"]).abs().max() / ref["logits"].abs().max())
        print(name, err)
        assert err < 1e-5, (name, err)
"""


# fla 0.6.0 runs in the Triton interpreter on CPU: its chunk kernels fail there, so both sides run fused_recurrent
# (attn_mode); flash-attn is replaced by an SDPA stand-in; residual_in_fp32=False because fla 0.6.0's blocks take
# residual_in_fp32 for block_residual_in_fp32 and then assert at layer 1 (its default config cannot run 2 layers).
@pytest.mark.slow  # ~40 s on 2 cores
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """fla 0.6.0 builds, saves and runs Rodimus models (own process); ours loads them strictly: same logits."""
    _fla060_available()
    here, root = Path(__file__).parent, Path(__file__).resolve().parents[3]
    for side, path in (("save", FLA060_PATH), ("load", str(root))):
        env = {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-c", _LOGITS, side, str(tmp_path), str(here)]
        run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{side}:\n{run.stdout}\n{run.stderr[-4000:]}"
    print(run.stdout)
