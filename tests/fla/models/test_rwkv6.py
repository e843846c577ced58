"""RWKV6 specifics: the token shift, fla 0.6.0's config defaults and FFN width, the layer's maths written out,
and (slow) fla 0.6.0 checkpoints loading with the same logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fla.layers.rwkv6 import RWKV6Attention
from fla.models import RWKV6Config
from fla.models.flops import TokenMixer
from fla.models.rwkv6.modeling_rwkv6 import RWKV6ForCausalLM, ffn_width
from fla.modules.token_shift import TokenShift, shift_tokens, token_shift
from tests.fla.models.families import FLA060_PATH
from tests.harness import assert_close, tol, using


def test_token_shift_dense_varlen_and_cache():
    x = torch.randn(1, 7, 3, dtype=torch.float64)
    cu = torch.tensor([0, 1, 1, 5, 7], dtype=torch.int32)  # lengths 1, 0, 4, 2
    shifted = shift_tokens(x, cu)
    assert torch.equal(token_shift(x, cu), shifted - x)
    expected = torch.zeros_like(x)
    for a, b in ((0, 1), (1, 5), (5, 7)):
        expected[0, a + 1 : b] = x[0, a : b - 1]
    assert torch.equal(shifted, expected)
    cache = torch.randn(4, 3, dtype=torch.float64)
    delta, last = TokenShift()(x, cu, cache, output_cache=True)
    for n, a in ((0, 0), (2, 1), (3, 5)):
        expected[0, a] = cache[n]
    assert torch.equal(delta, expected - x)
    # the last token of each sequence; the empty one keeps its cached token
    assert torch.equal(last, torch.stack([x[0, 0], cache[1], x[0, 4], x[0, 6]]))
    dense = torch.randn(2, 4, 3)
    delta, last = token_shift(dense, cache=cache[:2].float(), output_cache=True)
    assert torch.equal(delta, torch.cat([cache[:2, None].float(), dense[:, :-1]], 1) - dense)
    assert torch.equal(last, dense[:, -1])


def test_token_shift_errors():
    with pytest.raises(ValueError, match=r"cache has shape \[3, 3\], expected \[2, 3\]"):
        token_shift(torch.randn(2, 4, 3), cache=torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"x has shape \[4, 3\]"):
        token_shift(torch.randn(4, 3))
    with pytest.raises(ValueError, match="cu_seqlens"):
        token_shift(torch.randn(1, 4, 3), torch.tensor([0, 3, 2]))


def test_config_defaults_are_fla060s():
    config = RWKV6Config()
    expected = dict(
        attn_mode="chunk", hidden_size=2048, expand_k=0.5, expand_v=1.0, hidden_ratio=3.5, intermediate_size=None,
        num_hidden_layers=24, num_heads=4, proj_low_rank_dim=32, gate_low_rank_dim=64, hidden_act="sqrelu",
        norm_first=True, norm_bias=True, norm_eps=1e-5, attn=None, fuse_norm=True, vocab_size=32000,
    )  # fmt: skip
    assert {k: getattr(config, k) for k in expected} == expected
    assert ffn_width(2048, 3.5, None) == 7168 and ffn_width(1000, 3.5, None) == 3520 and ffn_width(8, 3.5, 5) == 5
    with pytest.raises(ValueError, match=r"hidden_act='gelu_new' is not one of"):
        RWKV6Config(hidden_act="gelu_new")
    with pytest.raises(ValueError, match=r"attn_mode='fused_chunk' is not one of"):
        RWKV6Config(attn_mode="fused_chunk")
    mixer = RWKV6ForCausalLM.token_mixer(RWKV6Config(hidden_size=256, num_heads=2))
    assert mixer == TokenMixer("linear", 2, 64, 128)


def layer_by_formula(layer: RWKV6Attention, x: torch.Tensor) -> torch.Tensor:
    """The layer written out in float64, token by token (fla 0.6.0's maths)."""
    p = {n: t.detach().double() for n, t in layer.named_parameters()}
    x = x.double()
    B, T, D = x.shape
    H, K, V = layer.num_heads, layer.head_k_dim, layer.head_v_dim
    delta = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1) - x
    low = torch.tanh((x + delta * p["x_proj.0.mu"]) @ p["x_proj.0.linear.weight"].T).view(B, T, 5, -1)
    mix = torch.einsum("btnr,dnr->btnd", low, p["x_proj.2.weight"].view(D, 5, -1)) + p["x_bias"]
    lerp = lambda i: x + delta * mix[:, :, i]
    r = lerp(0) @ p["r_proj.linear.weight"].T
    wl = torch.tanh(lerp(1) @ p["w_proj.linear.lora.0.weight"].T)
    w = -torch.exp(wl @ p["w_proj.linear.lora.2.weight"].T + p["w_proj.linear.lora.2.bias"])
    k, v = lerp(2) @ p["k_proj.linear.weight"].T, lerp(3) @ p["v_proj.linear.weight"].T
    g = lerp(4) @ p["g_proj.linear.weight"].T
    r, w, k = (t.view(B, T, H, K) for t in (r, w, k))
    v = v.view(B, T, H, V)
    S, outs = torch.zeros(B, H, K, V, dtype=torch.float64), []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", r[:, t], S + p["bonus"][..., None] * kv))
        S = S * w[:, t].exp()[..., None] + kv
    o = F.group_norm(torch.stack(outs, 1).reshape(B * T, H * V), H, p["g_norm.weight"], p["g_norm.bias"], 1e-5)
    return (o.view(B, T, -1) * F.silu(g)) @ p["o_proj.weight"].T


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_layer_equals_formula(mode):
    torch.manual_seed(0)
    layer = RWKV6Attention(mode, hidden_size=48, num_heads=2, proj_low_rank_dim=4, gate_low_rank_dim=8).train()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.normal_(0, 0.5 if name.endswith(("mu", "x_bias", "bonus")) else 0.2)
    x = torch.randn(2, 70, 48)
    with using("torch"):
        out = layer(x)[0]
    assert_close("out", layer_by_formula(layer, x), out, tol(torch.float32, 10))


_DRIVER = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[3])
import fla060_linear_compat as m
base = dict(hidden_size=128, num_hidden_layers=2, num_heads=4, proj_low_rank_dim=8, gate_low_rank_dim=16,
            vocab_size=512, fuse_cross_entropy=False, initializer_range=0.1)
m.CASES = {
    "rwkv6": ("rwkv6", dict(base)),
    "rwkv6_unfused_tied_postnorm": ("rwkv6", dict(base, fuse_norm=False, tie_word_embeddings=True, norm_first=False)),
    "rwkv6_hybrid": ("rwkv6", dict(base, attn={"layers": [1], "num_heads": 4})),
}
if sys.argv[1] == "save":  # fla initializes the token-shift mixes and the bonus at zero: make them count
    build = m._build_fla060

    def _build_randomized(config):
        model, mode, error = build(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("mu", "x_bias", "bonus")):
                    p.normal_(0, 0.5)
        return model, mode, error

    m._build_fla060 = _build_randomized
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
sys.exit(m.save(out) if sys.argv[1] == "save" else m.load(out, require_logits=True))
"""


@pytest.mark.slow  # fla 0.6.0 in the Triton interpreter
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    """fla 0.6.0 builds, saves and runs RWKV6 models (own process; token-shift mixes and bonus randomized); ours
    loads them: same keys, logits within 2e-3 (measured 5e-7 on CPU)."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (see test_fla060_linear_compat.py)")
    here, root = Path(__file__).parent, Path(__file__).resolve().parents[3]
    for side, path in (("save", FLA060_PATH), ("load", str(root))):
        env = {**os.environ, "PYTHONPATH": path}
        cmd = [sys.executable, "-c", _DRIVER, side, str(tmp_path / "out"), str(here)]
        run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{side}:\n{run.stdout}\n{run.stderr[-4000:]}"


def test_tensor_parallel_plan_names_existing_modules():
    # every path of the plan is there in a block (the trainer skips absent column projections silently)
    model = RWKV6ForCausalLM(RWKV6Config(hidden_size=64, num_hidden_layers=1, num_heads=2, vocab_size=32))
    block, plan = model.model.layers[0], RWKV6ForCausalLM.tensor_parallel_plan
    for name, region in plan.regions.items():
        module = block.get_submodule(name)
        for path in (*region.col, *region.row):
            assert isinstance(module.get_submodule(path), torch.nn.Linear), f"{name}.{path}"
        for path in region.shard:
            assert hasattr(module, path.split(".")[0]), f"{name}.{path}"
        for attr in region.divide:
            assert isinstance(getattr(module, attr), int), f"{name}.{attr}"
