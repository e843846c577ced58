"""Comba and GatedDeltaProduct layers == their formulas (fla 0.6.0's forwards) written out in float64."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import Comba, GatedDeltaProduct
from fla.models import FLACache
from tests.fla.layers.test_delta_net import causal_conv, rms
from tests.fla.ops.test_comba import reference as comba_recurrence
from tests.fla.ops.test_gated_delta_product import reference as product_recurrence
from tests.harness import DEVICE, assert_close, tol

RATIO = tol(torch.float64, 1e3)


def _qkv(layer, x):
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        return tuple(
            causal_conv(t, c, F.silu) for t, c in zip((q, k, v), (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d))
        )
    return F.silu(q), F.silu(k), F.silu(v)


def _output(layer, x, o, activation):
    o = rms(o, layer.o_norm.weight, layer.o_norm.eps)
    if layer.use_output_gate:
        o = o * activation(layer.g_proj(x).unflatten(-1, o.shape[-2:]))
    return layer.o_proj(o.flatten(-2))


def _gate(layer, x):
    return -layer.A_log.exp() * F.softplus(layer.a_proj(x) + layer.dt_bias)


def comba_reference(layer, x):
    """fla 0.6.0's Comba forward: p = k sigmoid(decay), q - D p, then the Comba recurrence (q, k, p L2-normed)."""
    H, HV, K, V = layer.num_heads, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim
    q, k, v = _qkv(layer, x)
    q, k, v = q.unflatten(-1, (H, K)), k.unflatten(-1, (H, K)), v.unflatten(-1, (HV, V))
    p = k * layer.decay[:, None].sigmoid() if layer.use_inner_decay else k
    if layer.use_output_correction:
        q = q - layer.D[:, None] * p
    beta = layer.b_proj(x).sigmoid()
    o, _ = comba_recurrence(q, k, v, p, _gate(layer, x), beta, use_qk_l2norm_in_kernel=True)
    return _output(layer, x, o, torch.sigmoid)


def product_reference(layer, x):
    """fla 0.6.0's GatedDeltaProduct forward: k, v, beta laid out (n, heads, dim) per token."""
    H, HV, K, V, n = layer.num_heads, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim, layer.num_householder
    B, T, _ = x.shape
    q, k, v = _qkv(layer, x)
    q = q.unflatten(-1, (H, K))
    k, v = k.reshape(B, T * n, H, K), v.reshape(B, T * n, HV, V)
    beta = layer.b_proj(x).sigmoid() * (2 if layer.allow_neg_eigval else 1)
    beta = beta.reshape(B, T * n, HV)
    g = _gate(layer, x) if layer.use_forget_gate else None
    o, _ = product_recurrence(q, k, v, g, beta, n, use_qk_l2norm_in_kernel=True)
    return _output(layer, x, o, F.silu)


CASES = {
    "comba": (Comba, comba_reference, dict()),
    "comba_gva_plain": (
        Comba, comba_reference, dict(num_v_heads=4, use_output_gate=False, use_inner_decay=False, correction_factor=0.5)
    ),
    "comba_noconv_nocorrection": (Comba, comba_reference, dict(use_short_conv=False, use_output_correction=False)),
    "product": (GatedDeltaProduct, product_reference, dict()),
    "product_gva_3": (GatedDeltaProduct, product_reference, dict(num_v_heads=4, num_householder=3, conv_bias=True)),
    "product_1_nogates": (
        GatedDeltaProduct, product_reference,
        dict(num_householder=1, use_forget_gate=False, allow_neg_eigval=False, use_output_gate=False),
    ),
}  # fmt: skip


def make(case):
    cls, _, kwargs = CASES[case]
    torch.manual_seed(0)
    layer = cls(hidden_size=40, head_dim=12, num_heads=2, layer_idx=0, **kwargs).to(DEVICE, torch.float64)
    for p in layer.parameters():  # norms start at ones and conv biases at zero: make every weight matter
        p.data.add_(0.1 * torch.randn_like(p))
    return layer


RECURRENT = ("comba_gva_plain", "product_gva_3")  # the decoding path (eval, short inputs) for one case of each layer
PATHS = [(c, True) for c in CASES] + [(c, False) for c in RECURRENT]


@pytest.mark.parametrize("case, training", PATHS, ids=[f"{c}-{'chunk' if t else 'recurrent'}" for c, t in PATHS])
def test_layer_matches_formula(case, training):
    layer = make(case).train(training)
    x = torch.randn(2, 9, 40, device=DEVICE, dtype=torch.float64)
    out, _, _ = layer(x)
    assert_close("out", CASES[case][1](layer, x), out, RATIO)
    if training:
        out.sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", ["comba_gva_plain", "product_gva_3"])
def test_cached_decoding_equals_full_forward(case):
    layer = make(case).eval()
    x = torch.randn(2, 7, 40, device=DEVICE, dtype=torch.float64)
    full, _, _ = layer(x)
    cache = FLACache()
    prefix, _, cache = layer(x[:, :5], past_key_values=cache, use_cache=True)
    steps = [layer(x[:, t : t + 1], past_key_values=cache, use_cache=True)[0] for t in (5, 6)]
    assert_close("decoded", full, torch.cat([prefix, *steps], 1), RATIO)
    state = cache[0]["recurrent_state"]
    assert state.shape == (2, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim) and state.dtype == torch.float64


def test_fla_parameter_names_and_init():
    comba = Comba(hidden_size=40, head_dim=12, num_heads=2, num_v_heads=4, correction_factor=0.02)
    names = {n: tuple(p.shape) for n, p in comba.named_parameters()}
    assert (
        names["decay"] == (2,) and names["D"] == (2,) and names["A_log"] == (4,) and names["a_proj.weight"] == (4, 40)
    )
    assert torch.equal(comba.decay, torch.ones(2)) and torch.allclose(comba.D, torch.full((2,), 0.02))
    assert comba.o_norm.activation == "sigmoid" and bool((comba.A_log.exp() <= 16).all())
    product = GatedDeltaProduct(hidden_size=40, head_dim=12, num_heads=2, num_householder=3, use_forget_gate=False)
    shapes = {n: tuple(p.shape) for n, p in product.named_parameters()}
    assert shapes["k_proj.weight"] == (72, 40) and shapes["v_proj.weight"] == (144, 40)
    assert shapes["b_proj.weight"] == (6, 40) and shapes["k_conv1d.weight"] == (72, 1, 4)
    assert not any(n.startswith(("a_proj", "A_log", "dt_bias")) for n in shapes)
    with pytest.raises(ValueError, match="num_householder=0 must be an int >= 1"):
        GatedDeltaProduct(hidden_size=40, head_dim=12, num_heads=2, num_householder=0)
    with pytest.raises(ValueError, match="num_v_heads=3 is not a multiple of num_heads=2"):
        Comba(hidden_size=40, head_dim=12, num_heads=2, num_v_heads=3)
