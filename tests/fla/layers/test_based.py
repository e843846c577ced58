"""BasedLinearAttention / ReBasedLinearAttention == their formula written out as masked quadratic attention
(float64): weights ``phi(q_t) . phi(k_s)`` over their row sums + eps; padded == varlen == per sequence; cached
decoding == one pass; fla 0.6.0's parameter names (and its PyTorch reference forward, where it runs on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fla.layers import BasedLinearAttention, ReBasedLinearAttention
from fla.models import FLACache
from tests.harness import DEVICE, assert_close, tol, using

D, H, F = 48, 3, 6  # hidden size, heads, feature_dim: value heads 16 wide, Taylor features 1 + 6 + 21 = 28
# fla 0.6.0 (flash-linear-attention + fla-core) in its own directory, as the other fla 0.6.0 checks
FLA060 = Path(os.environ.get("FLA060_PATH", "/tmp/fla060"))

LAYERS = {
    "based": lambda **kw: BasedLinearAttention(hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H, **kw),
    "rebased": lambda **kw: ReBasedLinearAttention(
        hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H, **kw
    ),
}


def _make(kind, seed=0, **kw):
    torch.manual_seed(seed)
    layer = LAYERS[kind](**kw).to(DEVICE, torch.float64)
    with torch.no_grad():  # move the feature map's affine away from its identity init, so it is tested
        for p in layer.feature_map.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _reference(layer, x):
    """``w_ts = phi(q_t) . phi(k_s)`` (causal: ``s <= t``); ``o_t = sum_s w_ts v_s / (sum_s w_ts + eps)``."""
    q = layer.feature_map(layer.q_proj(x).unflatten(-1, (H, F)))
    k = layer.feature_map(layer.k_proj(x).unflatten(-1, (H, F)))
    v = layer.v_proj(x).unflatten(-1, (H, -1))
    w = torch.einsum("bthk,bshk->bhts", q, k)
    if layer.causal:
        T = x.shape[1]
        w = w.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=x.device).tril(), 0)
    o = torch.einsum("bhts,bshv->bthv", w, v) / (w.sum(-1).transpose(1, 2)[..., None] + layer.eps)
    return layer.o_proj(o.flatten(-2))


def test_taylor_and_rebased_maps_are_the_kernels():
    """The weights the reference uses are Based's ``1 + s + s^2 / 2`` and ReBased's ``(q' . k')^2 / d``."""
    layer = _make("based")
    q, k = torch.randn(2, 5, H, F, dtype=torch.float64), torch.randn(2, 5, H, F, dtype=torch.float64)
    s = (q * k).sum(-1) / F**0.5
    assert_close("taylor", 1 + s + s**2 / 2, (layer.feature_map(q) * layer.feature_map(k)).sum(-1), 1e-12)
    fm = _make("rebased").feature_map.cpu()
    qn, kn = fm(q, flatten=False), fm(k, flatten=False)
    assert_close("rebased", (qn * kn).sum(-1) ** 2 / F, (fm(q) * fm(k)).sum(-1), 1e-12)


REBASED_MAPS = [
    dict(),
    dict(use_beta=False),
    dict(normalize=False),
    dict(normalize=False, use_beta=False),
]


@pytest.mark.parametrize(
    "kind, kw",
    [("based", {})] + [("rebased", kw) for kw in REBASED_MAPS] + [("based", dict(eps=0.5)), ("rebased", dict(eps=2.0))],
)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula_and_grads_reach_every_parameter(kind, kw, causal, training):
    layer = _make(kind, causal=causal, **kw).train(training)
    x = torch.randn(2, 23, D, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", _reference(layer, x), out, tol(torch.float64, 1e3))
    out.square().sum().backward()
    names = [name for name, _ in layer.named_parameters()]
    assert len(names) == (4 if kind == "based" else 4 + len(list(layer.feature_map.parameters())))
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_padded_equals_varlen_equals_each_sequence(kind, causal, training):
    layer = _make(kind, causal=causal).train(training)
    lens = [5, 1, 9]
    xs = [torch.randn(1, n, D, device=DEVICE, dtype=torch.float64) for n in lens]
    each = [layer(x)[0] for x in xs]
    for x, o in zip(xs, each):
        assert_close("one sequence", _reference(layer, x), o, tol(torch.float64, 1e3))
    cu = torch.tensor([0, 5, 6, 15], device=DEVICE, dtype=torch.int32)
    packed = layer(torch.cat(xs, 1), cu_seqlens=cu)[0]
    assert_close("varlen", torch.cat(each, 1), packed, tol(torch.float64, 1e3))
    padded = torch.zeros(3, 9, D, device=DEVICE, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.long, device=DEVICE)
    for i, (n, x) in enumerate(zip(lens, xs)):
        padded[i, 9 - n :], mask[i, 9 - n :] = x[0], 1
    out = layer(padded, attention_mask=mask)[0]
    for i, (n, ref) in enumerate(zip(lens, each)):
        assert_close(f"padded row {i}", ref[0], out[i, 9 - n :], tol(torch.float64, 1e3))
        assert (out[i, : 9 - n] == 0).all()


@pytest.mark.parametrize("kind", LAYERS)
def test_cache_continues_the_sequence(kind):
    """Prefill (chunk: more than 64 tokens) then one token at a time (recurrent) == one pass; state (S, z)."""
    layer = _make(kind, layer_idx=0).eval().requires_grad_(False)
    x = torch.randn(2, 76, D, device=DEVICE, dtype=torch.float64)
    full, _, _ = layer(x)
    cache = FLACache()
    parts = [layer(x[:, :70], past_key_values=cache)[0]]
    parts += [layer(x[:, t : t + 1], past_key_values=cache)[0] for t in range(70, 76)]
    assert cache.get_seq_length(0) == 76
    assert_close("decoded", full, torch.cat(parts, 1), tol(torch.float64, 1e3))
    S, z = cache[0]["recurrent_state"]
    K = layer.feature_map(x.new_zeros(F)).shape[-1]
    assert S.shape == (2, H, K, D // H) and z.shape == (2, 1, H, K)


@pytest.mark.parametrize("kind", LAYERS)
def test_left_padded_prefill_then_decode(kind):
    """A left-padded batch prefilled into the cache, then decoded, == each row run alone."""
    layer = _make(kind, layer_idx=0).eval().requires_grad_(False)
    lens, T, extra = [4, 9], 9, 3
    xs = [torch.randn(1, n + extra, D, device=DEVICE, dtype=torch.float64) for n in lens]
    padded = torch.zeros(2, T, D, device=DEVICE, dtype=torch.float64)
    mask = torch.zeros(2, T + extra, dtype=torch.long, device=DEVICE)
    for i, (n, x) in enumerate(zip(lens, xs)):
        padded[i, T - n :], mask[i, T - n :] = x[0, :n], 1
    cache = FLACache()
    layer(padded, attention_mask=mask[:, :T], past_key_values=cache)
    for j in range(extra):
        step = torch.stack([x[0, n + j] for n, x in zip(lens, xs)])[:, None]
        out = layer(step, attention_mask=mask[:, : T + j + 1], past_key_values=cache)[0]
        for i, (n, x) in enumerate(zip(lens, xs)):
            ref = layer(x[:, : n + j + 1])[0][0, -1]
            assert_close(f"row {i} step {j}", ref, out[i, 0], tol(torch.float64, 1e3))


def test_hidden_size_not_a_multiple_of_heads_follows_fla():
    """fla floors ``hidden_size / num_heads`` for the value heads; o_proj maps ``H * head_dim`` back."""
    layer = BasedLinearAttention(hidden_size=50, feature_dim=4, num_heads=3, num_key_value_heads=3)
    assert layer.head_v_dim == 16 and tuple(layer.o_proj.weight.shape) == (50, 48)
    assert layer(torch.randn(2, 5, 50))[0].shape == (2, 5, 50)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="BasedLinearAttention: mode='recurrent' is not one of"):
        BasedLinearAttention(hidden_size=D, mode="recurrent")
    with pytest.raises(ValueError, match="feature_name='relu' is not supported"):
        BasedLinearAttention(hidden_size=D, feature_name="relu")
    with pytest.raises(ValueError, match="num_heads=4 must equal num_key_value_heads=2"):
        BasedLinearAttention(hidden_size=D, num_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="ReBasedLinearAttention: num_heads=4 must equal num_key_value_heads=2"):
        ReBasedLinearAttention(hidden_size=D, num_heads=4, num_key_value_heads=2)
    with pytest.raises(ValueError, match="feature_dim=0 must be a positive integer"):
        ReBasedLinearAttention(hidden_size=D, feature_dim=0)
    with pytest.raises(ValueError, match="num_heads=0 must be a positive integer"):
        BasedLinearAttention(hidden_size=D, num_heads=0, num_key_value_heads=0)
    with pytest.raises(ValueError, match="hidden_size=8 is smaller than num_heads=12"):
        BasedLinearAttention(hidden_size=8)
    with pytest.raises(ValueError, match="use_gamma=False, use_beta=True, normalize=False is not supported"):
        ReBasedLinearAttention(hidden_size=D, use_gamma=False, normalize=False)
    layer = _make("based", causal=False, layer_idx=0)
    with pytest.raises(ValueError, match="causal=False cannot use past_key_values"):
        layer(torch.randn(1, 3, D, device=DEVICE, dtype=torch.float64), past_key_values=FLACache())
    with pytest.raises(ValueError, match=r"BasedLinearAttention: hidden_states has shape \[2, 5, 32\]"):
        layer(torch.randn(2, 5, 32, device=DEVICE, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", LAYERS)
def test_triton_matches_torch_with_cache(kind, dtype):
    """The Triton kernels (the interpreter on CPU) under the layer: output, gradients, one decoding step."""
    torch.manual_seed(0)
    layer = LAYERS[kind](layer_idx=0).to(DEVICE, dtype)
    x = torch.randn(2, 21, D, device=DEVICE, dtype=dtype)
    results = []
    for backend in ("torch", "triton"):
        with using(backend):
            layer.train().zero_grad()
            out, _, _ = layer(x)
            out.float().square().sum().backward()
            with torch.no_grad():
                cache = FLACache()
                layer.eval()(x[:, :-1], past_key_values=cache)
                step, _, _ = layer(x[:, -1:], past_key_values=cache)
            results.append((out.detach(), step, [p.grad.clone() for p in layer.parameters()]))
    (ref, ref_step, ref_grads), (out, step, grads) = results
    assert_close("out", ref, out, tol(dtype, 20))
    assert_close("decode step", ref_step, step, tol(dtype, 20))
    for (name, _), a, b in zip(layer.named_parameters(), ref_grads, grads):
        assert_close(f"d{name}", a, b, tol(dtype, 50))


_FLA_SCRIPT = r"""
import json, sys, torch
from fla.layers import BasedLinearAttention, ReBasedLinearAttention
import fla; assert fla.__file__.startswith(sys.argv[2]), fla.__file__
cases = json.loads(sys.argv[1])
result = {}
for name, (cls, kw) in cases.items():
    layer = {"based": BasedLinearAttention, "rebased": ReBasedLinearAttention}[cls](**kw)
    result[name] = [[n, list(p.shape)] for n, p in layer.state_dict().items()]
    ref = sys.argv[3] + "/" + name
    try:
        state, x = torch.load(ref + ".in.pt")
    except FileNotFoundError:
        continue
    layer = layer.double()
    layer.load_state_dict(state)
    torch.save(layer.forward_reference(x).detach(), ref + ".out.pt")
print(json.dumps(result))
"""

FLA_CASES = {
    "based_default": ("based", dict(hidden_size=64)),
    "based_small": ("based", dict(hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H)),
    "based_floor": ("based", dict(hidden_size=50, feature_dim=4, num_heads=3, num_key_value_heads=3)),
    "rebased_default": ("rebased", dict(hidden_size=64)),
    "rebased_no_beta": (
        "rebased",
        dict(hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H, use_beta=False),
    ),
    "rebased_no_norm": (
        "rebased",
        dict(hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H, normalize=False),
    ),
    "rebased_gamma": (
        "rebased",
        dict(hidden_size=D, feature_dim=F, num_heads=H, num_key_value_heads=H, normalize=False, use_beta=False),
    ),
}
# fla 0.6.0's forward_reference runs on CPU where its feature map has no Triton layer norm (not ReBased's default)
FLA_FORWARD = ("based_small", "based_floor", "rebased_no_norm", "rebased_gamma")


@pytest.mark.slow  # needs fla 0.6.0 at FLA060_PATH, as the other fla 0.6.0 checks
def test_parameter_names_and_reference_forward_match_fla060(tmp_path):
    """fla 0.6.0's layers (built in a subprocess) have our state-dict keys and shapes, in the same order, and
    their PyTorch reference forward gives our output from the same weights."""
    if not (FLA060 / "fla" / "layers" / "based.py").exists():
        pytest.fail(
            f"FLA060_PATH={FLA060} holds no fla 0.6.0: pip install --no-deps --target DIR "
            "fla-core==0.6.0 flash-linear-attention==0.6.0 and export FLA060_PATH=DIR"
        )
    ours = {}
    for name, (cls, kw) in FLA_CASES.items():
        torch.manual_seed(0)
        layer = {"based": BasedLinearAttention, "rebased": ReBasedLinearAttention}[cls](**kw).double()
        ours[name] = layer
        if name in FLA_FORWARD:
            with torch.no_grad():
                for p in layer.feature_map.parameters():
                    p.add_(0.3 * torch.randn_like(p))
            x = torch.randn(2, 19, kw["hidden_size"], dtype=torch.float64)
            torch.save((layer.state_dict(), x), tmp_path / f"{name}.in.pt")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(FLA060)}
    proc = subprocess.run(
        [sys.executable, "-c", _FLA_SCRIPT, json.dumps(FLA_CASES), str(FLA060), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, layer in ours.items():
        keys = [[n, list(t.shape)] for n, t in layer.state_dict().items()]
        assert keys == theirs[name], name
    for name in FLA_FORWARD:
        layer = ours[name]
        _, x = torch.load(tmp_path / f"{name}.in.pt")
        ref = torch.load(tmp_path / f"{name}.out.pt")
        assert_close(name, ref, layer.train()(x)[0], tol(torch.float64, 1e3))


@pytest.mark.parametrize("kind", LAYERS)
def test_mixer_of_a_hybrid_linear_attn_model(kind):
    """As the mixer of a tiny ``linear_attn`` model whose layer 1 is softmax attention: padded batch == each row
    alone, and greedy decoding through the cache == the full forward's logits."""
    from fla.models import LinearAttentionConfig, LinearAttentionForCausalLM

    torch.manual_seed(0)
    attn = {"layers": [1], "num_heads": 2, "num_kv_heads": 1}
    config = LinearAttentionConfig(
        hidden_size=D, num_hidden_layers=3, num_heads=H, vocab_size=97, attn=attn, fuse_cross_entropy=False
    )
    model = LinearAttentionForCausalLM(config)
    for i, block in enumerate(model.model.layers):
        if i != 1:
            block.attn = LAYERS[kind](layer_idx=i)
    model = model.to(DEVICE, torch.float64).eval()
    ids = torch.randint(0, 97, (2, 12), device=DEVICE)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        alone = model(ids[:1, 5:]).logits
        assert_close("padded row", alone[0], logits[0, 5:], tol(torch.float64, 1e3))
        full = model(ids[1:]).logits
        out = model(ids[1:, :8], use_cache=True)
        cache, steps = out.past_key_values, [out.logits]
        for t in range(8, 12):
            out = model(ids[1:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
        assert_close("decoded", full, torch.cat(steps, 1), tol(torch.float64, 1e3))
