"""fla 0.6.0's other public op names (fused_chunk_*, parallel_*, Based, ReBased, IPLR, fla.ops.common internals)
against float64 references, or, for pure aliases, against the op they wrap called with fla's argument names."""

import pytest
import torch
import torch.nn.functional as F

from fla.ops import (
    chunk_delta_rule,
    chunk_gla,
    chunk_iplr_delta_rule,
    chunk_retention,
    chunk_simple_gla,
    fused_chunk_based,
    fused_chunk_delta_rule,
    fused_chunk_gla,
    fused_chunk_retention,
    fused_chunk_simple_gla,
    fused_recurrent_iplr_delta_rule,
    parallel_based,
    parallel_retention,
    parallel_simple_gla,
)
from fla.ops.based import naive_parallel_based
from fla.ops.rebased import parallel_rebased
from fla.ops.simple_gla.parallel import simple_gla_scores
from tests.harness import assert_close, to_reference, tol, using

TOL32 = tol(torch.float32, 20)


def _leaves(*shapes, dtype=torch.float32):
    return [torch.randn(*s, dtype=dtype).requires_grad_() for s in shapes]


# ---------------------------------------------------------------- pure aliases (fla's keyword names)


def _alias_cases():
    B, T, H, K, V = 2, 37, 2, 12, 10
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    h0 = torch.randn(B, H, K, V)
    gv = F.logsigmoid(torch.randn(B, T, H, K))
    gs = F.logsigmoid(torch.randn(B, T, H))
    beta = torch.rand(B, T, H)
    kn = F.normalize(k, dim=-1)
    common = dict(scale=0.3, initial_state=h0, output_final_state=True)
    return [
        (fused_chunk_gla, chunk_gla, dict(q=q, k=k, v=v, g=gv, **common)),
        (fused_chunk_simple_gla, chunk_simple_gla, dict(q=q, k=k, v=v, g=gs, g_gamma=-torch.rand(H), **common)),
        (fused_chunk_retention, chunk_retention, dict(q=q, k=k, v=v, **common)),
        (fused_chunk_delta_rule, chunk_delta_rule, dict(q=q, k=kn, v=v, beta=beta, **common)),
    ]


@pytest.mark.parametrize("case", range(4))
def test_fused_chunk_aliases_match_chunk_ops(case):
    alias, op, kwargs = _alias_cases()[case]
    with using("torch"):
        o, ht = alias(**kwargs)
        o_ref, ht_ref = op(**kwargs)
    assert torch.equal(o, o_ref) and torch.equal(ht, ht_ref)


def test_fused_chunk_aliases_varlen_and_bad_input():
    lengths = [1, 20, 9]
    cu = torch.tensor([0, 1, 21, 30])
    q, k, v = torch.randn(1, 30, 2, 8), torch.randn(1, 30, 2, 8), torch.randn(1, 30, 2, 6)
    with using("torch"):
        o, _ = fused_chunk_retention(q, k, v, cu_seqlens=cu)
        parts = [chunk_retention(q[:, a:b], k[:, a:b], v[:, a:b])[0] for a, b in zip(cu[:-1], cu[1:])]
        assert_close("o", torch.cat(parts, 1), o, tol(torch.float32))
        assert sum(lengths) == o.shape[1]
        with pytest.raises(ValueError, match="cu_seqlens"):
            fused_chunk_retention(q, k, v, cu_seqlens=torch.tensor([0, 21, 20, 30]))


def test_gdn_short_names_are_the_gated_delta_rule_ops():
    """fla 0.6.0's ``chunk_gdn`` / ``fused_recurrent_gdn``: the same functions, from both import paths."""
    import fla.ops
    import fla.ops.gated_delta_rule as gdr

    assert fla.ops.chunk_gdn is gdr.chunk_gdn is gdr.chunk_gated_delta_rule
    assert fla.ops.fused_recurrent_gdn is gdr.fused_recurrent_gdn is gdr.fused_recurrent_gated_delta_rule
    assert {"chunk_gdn", "fused_recurrent_gdn"} <= set(fla.ops.__all__) & set(gdr.__all__)


# ---------------------------------------------------------------- parallel_simple_gla / parallel_retention


def _gated_reference(q, k, v, g, scale):
    """float64 step by step: ``S_t = exp(g_t) S_{t-1} + k_t v_t^T``, ``o_t = scale * S_t^T q_t``, and the scores
    ``scale * q_i . k_j * prod_{j < s <= i} exp(g_s)`` built one row at a time."""
    B, T, H, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1])
    outs, rows = [], []
    for t in range(T):
        decay = g[:, t].exp()[..., None, None] if g is not None else 1.0
        S = decay * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
        G = torch.zeros(B, H, T, dtype=q.dtype) if g is None else g[:, : t + 1].flip(1).cumsum(1).flip(1)
        G = G.transpose(1, 2) if g is not None else G
        row = torch.zeros(B, H, T, dtype=q.dtype)
        w = torch.einsum("bhk,bjhk->bhj", q[:, t], k[:, : t + 1]) * scale
        if g is not None:  # decay from token j to t: g_{j+1} + ... + g_t = (sum_{s >= j} g_s) - g_j
            w = w * (G - g[:, : t + 1].transpose(1, 2)).exp()
        row[..., : t + 1] = w
        rows.append(row)
    return torch.stack(outs, 1), torch.stack(rows, 2)


@pytest.mark.parametrize("gated", [True, False])
def test_parallel_simple_gla(gated):
    B, T, H, K, V = 2, 23, 2, 6, 5
    q, k, v = _leaves((B, T, H, K), (B, T, H, K), (B, T, H, V))
    g = F.logsigmoid(torch.randn(B, T, H)).requires_grad_() if gated else None
    inputs = dict(q=q, k=k, v=v, g=g)
    ref = {n: to_reference(t) for n, t in inputs.items()}
    with using("torch"):
        o, attn = parallel_simple_gla(**inputs, scale=0.4, output_attentions=True)
    o_ref, attn_ref = _gated_reference(ref["q"], ref["k"], ref["v"], ref["g"], 0.4)
    assert attn.shape == (B, H, T, T) and attn.dtype == q.dtype
    assert_close("o", o_ref, o, TOL32)
    assert_close("attn", attn_ref, attn, TOL32)
    do, da = torch.randn_like(o_ref), torch.randn_like(attn_ref)
    names = [n for n, t in inputs.items() if t is not None]
    got = torch.autograd.grad([o, attn], [inputs[n] for n in names], [do.float(), da.float()])
    want = torch.autograd.grad([o_ref, attn_ref], [ref[n] for n in names], [do, da])
    for n, a, b in zip(names, got, want):
        assert_close(f"d{n}", b, a, TOL32)
    with using("torch"):
        o2, none = parallel_simple_gla(q, k, v, g, scale=0.4)
    assert none is None and torch.equal(o2, o)


def test_parallel_retention_matches_decays():
    B, T, H, K, V = 1, 19, 3, 8, 4
    q, k, v = _leaves((B, T, H, K), (B, T, H, K), (B, T, H, V))
    gamma = torch.log1p(-torch.exp2(-5.0 - torch.arange(H, dtype=torch.float64)))
    ref = [to_reference(t) for t in (q, k, v)]
    with using("torch"):
        o, attn = parallel_retention(q, k, v, output_attentions=True)
    o_ref, attn_ref = _gated_reference(*ref, gamma.expand(B, T, H), K**-0.5)
    assert_close("o", o_ref, o, TOL32)
    assert_close("attn", attn_ref, attn, TOL32)
    do = torch.randn_like(o_ref)
    for name, a, b in zip("qkv", torch.autograd.grad(o, (q, k, v), do.float()), torch.autograd.grad(o_ref, ref, do)):
        assert_close(f"d{name}", b, a, TOL32)


@pytest.mark.parametrize("op", [parallel_simple_gla, parallel_retention])
def test_parallel_varlen_and_output_attentions_check(op):
    cu = torch.tensor([0, 1, 17, 30], dtype=torch.int32)
    q, k, v = torch.randn(1, 30, 2, 8), torch.randn(1, 30, 2, 8), torch.randn(1, 30, 2, 6)
    with using("torch"):
        o, attn = op(q, k, v, cu_seqlens=cu)
        parts = [op(q[:, a:b], k[:, a:b], v[:, a:b])[0] for a, b in zip(cu[:-1], cu[1:])]
        assert attn is None
        assert_close("o", torch.cat(parts, 1), o, tol(torch.float32))
        with pytest.raises(ValueError, match="output_attentions"):
            op(q, k, v, output_attentions=True, cu_seqlens=cu)


# ---------------------------------------------------------------- Based


def _based_reference(q, k, v, scale, use_norm):
    """float64 token by token: ``o_t = sum_{j <= t} w_tj v_j`` (over ``sum_j w_tj + 1e-6``), ``w = 1 + s + s^2/2``."""
    outs = []
    for t in range(q.shape[1]):
        s = torch.einsum("bhk,bjhk->bjh", q[:, t], k[:, : t + 1]) * scale
        w = 1 + s + s * s / 2
        o = torch.einsum("bjh,bjhv->bhv", w, v[:, : t + 1])
        outs.append(o / (w.sum(1)[..., None] + 1e-6) if use_norm else o)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("op", [parallel_based, fused_chunk_based])
@pytest.mark.parametrize("use_norm", [True, False])
def test_based(op, use_norm):
    B, T, H, K, V = 2, 63, 2, 6, 5
    q, k, v = _leaves((B, T, H, K), (B, T, H, K), (B, T, H, V))
    ref = [to_reference(t) for t in (q, k, v)]
    with using("torch"):
        o = op(q, k, v, use_norm=use_norm)
    o_ref = _based_reference(*ref, K**-0.5, use_norm)
    assert o.dtype == q.dtype
    assert_close("o", o_ref, o, TOL32)
    assert_close("naive", o_ref, naive_parallel_based(*ref, use_norm=use_norm), tol(torch.float64))
    do = torch.randn_like(o_ref)
    for name, a, b in zip("qkv", torch.autograd.grad(o, (q, k, v), do.float()), torch.autograd.grad(o_ref, ref, do)):
        assert_close(f"d{name}", b, a, TOL32)


def test_based_bad_inputs():
    q, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 3)
    with pytest.raises(ValueError, match="q and k"):
        parallel_based(q, torch.randn(1, 8, 2, 5), v)
    with pytest.raises(ValueError, match="v must be"):
        fused_chunk_based(q, q, torch.randn(1, 7, 2, 3))
    with pytest.raises(ValueError, match="use_norm"):
        parallel_based(q, q, v, use_norm=1)


def _rebased_reference(q, k, v, scale, eps, use_normalize):
    """float64 token by token: ``o_t = sum_{j <= t} s_tj^2 v_j`` (over ``z_t + eps``), ``z_t = sum_j s_tj^2``."""
    outs, zs = [], []
    for t in range(q.shape[1]):
        w = (torch.einsum("bhk,bjhk->bjh", q[:, t], k[:, : t + 1]) * scale) ** 2
        o, z = torch.einsum("bjh,bjhv->bhv", w, v[:, : t + 1]), w.sum(1)
        outs.append(o / (z[..., None] + eps) if use_normalize else o)
        zs.append(z)
    return torch.stack(outs, 1), torch.stack(zs, 1)


@pytest.mark.parametrize("use_scale, use_normalize", [(True, True), (False, False)])
def test_rebased(use_scale, use_normalize):
    B, T, H, K, V = 2, 63, 2, 6, 5
    q, k, v = _leaves((B, T, H, K), (B, T, H, K), (B, T, H, V))
    ref = [to_reference(t) for t in (q, k, v)]
    with using("torch"):
        o = parallel_rebased(q, k, v, 1e-3, use_scale=use_scale, use_normalize=use_normalize)
        o2, z2 = parallel_rebased(q, k, v, return_both=True)
    o_ref, _ = _rebased_reference(*ref, K**-0.5 if use_scale else 1.0, 1e-3, use_normalize)
    assert o.dtype == q.dtype and o.shape == (B, T, H, V)
    assert_close("o", o_ref, o, TOL32)
    do = torch.randn_like(o_ref)
    for name, a, b in zip("qkv", torch.autograd.grad(o, (q, k, v), do.float()), torch.autograd.grad(o_ref, ref, do)):
        assert_close(f"d{name}", b, a, TOL32)
    # return_both: the unnormalized output and normalizer in fla 0.6.0's [B, H, T, ...] layout
    raw, z = _rebased_reference(*ref, K**-0.5, 0.0, False)
    assert o2.shape == (B, H, T, V) and z2.shape == (B, H, T)
    assert_close("o (return_both)", raw.transpose(1, 2), o2, TOL32)
    assert_close("z (return_both)", z.transpose(1, 2), z2, TOL32)


def test_rebased_bad_inputs():
    q, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 3)
    with pytest.raises(ValueError, match="parallel_rebased: q and k"):
        parallel_rebased(q, torch.randn(1, 8, 2, 5), v)
    with pytest.raises(ValueError, match="parallel_rebased: use_normalize must be a bool"):
        parallel_rebased(q, q, v, use_normalize=1)


# ---------------------------------------------------------------- IPLR


def _iplr_reference(q, k, v, a, b, scale, h0):
    """float64 step by step: ``S_t = S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``, ``o_t = scale * S_t^T q_t``."""
    S, outs = h0, []
    for t in range(q.shape[1]):
        aS = torch.einsum("nhk,nhkv->nhv", a[:, t], S)
        S = S + b[:, t, :, :, None] * aS[:, :, None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * torch.einsum("nhk,nhkv->nhv", q[:, t], S))
    return torch.stack(outs, 1), S


def _iplr_inputs(N, T, H=2, K=10, V=6):
    q, k, v = torch.randn(N, T, H, K), F.normalize(torch.randn(N, T, H, K), dim=-1), torch.randn(N, T, H, V)
    kk = F.normalize(torch.randn(N, T, H, K), dim=-1)
    a, b = -kk, kk * torch.rand(N, T, H, 1)  # a stable transition I - beta kk kk^T
    h0 = torch.randn(N, H, K, V)
    return {n: t.requires_grad_() for n, t in dict(q=q, k=k, v=v, a=a, b=b, h0=h0).items()}


@pytest.mark.parametrize("op", [chunk_iplr_delta_rule, fused_recurrent_iplr_delta_rule])
def test_iplr(op):
    x = _iplr_inputs(2, 41)
    ref = {n: to_reference(t) for n, t in x.items()}
    with using("torch"):
        o, ht = op(x["q"], x["k"], x["v"], x["a"], x["b"], initial_state=x["h0"], output_final_state=True)
    o_ref, ht_ref = _iplr_reference(*(ref[n] for n in "qkvab"), 10**-0.5, ref["h0"])
    assert_close("o", o_ref, o, TOL32)
    assert_close("ht", ht_ref, ht, TOL32)
    do, dht = torch.randn_like(o_ref), torch.randn_like(ht_ref)
    names = list(x)
    got = torch.autograd.grad([o, ht], [x[n] for n in names], [do.float(), dht.float()])
    want = torch.autograd.grad([o_ref, ht_ref], [ref[n] for n in names], [do, dht])
    for n, g, w in zip(names, got, want):
        assert_close(f"d{n}", w, g, TOL32)


@pytest.mark.parametrize("op", [chunk_iplr_delta_rule, fused_recurrent_iplr_delta_rule])
def test_iplr_varlen_and_bad_input(op):
    cu = torch.tensor([0, 1, 25, 33])
    x = _iplr_inputs(1, 33)
    h0 = torch.randn(3, 2, 10, 6)
    with using("torch"):
        o, ht = op(*(x[n] for n in "qkvab"), initial_state=h0, output_final_state=True, cu_seqlens=cu)
    for i, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
        seq = [to_reference(x[n][:, s:e]) for n in "qkvab"]
        o_ref, ht_ref = _iplr_reference(*seq, 10**-0.5, h0[i : i + 1].double())
        assert_close(f"o[{i}]", o_ref, o[:, s:e], TOL32)
        assert_close(f"ht[{i}]", ht_ref, ht[i : i + 1], TOL32)
    with pytest.raises(ValueError, match=r"\ba\b"):
        op(x["q"], x["k"], x["v"], x["a"][..., :5], x["b"])


# ---------------------------------------------------------------- the Triton path (interpreter on CPU)


def test_triton_path_based_parallel_and_iplr():
    """The wrapped Triton ops with these wrappers' shapes: Based's Taylor features (1 + K + K(K+1)/2 = 15 keys)
    and the ones column (V + 1 values), parallel_simple_gla's gates, IPLR's zero decays."""
    B, T, H, K, V = 1, 20, 1, 4, 5
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    g = F.logsigmoid(torch.randn(B, T, H))
    x = _iplr_inputs(1, 20, H=1, K=8, V=4)
    with using("triton"):
        o_based = parallel_based(q, k, v)
        o_gla, attn = parallel_simple_gla(q, k, v, g, output_attentions=True)
        o_iplr, ht = chunk_iplr_delta_rule(*(x[n] for n in "qkvab"), initial_state=x["h0"], output_final_state=True)
    ref = [t.double() for t in (q, k, v)]
    assert_close("based", _based_reference(*ref, K**-0.5, True), o_based, TOL32)
    o_ref, attn_ref = _gated_reference(*ref, g.double(), K**-0.5)
    assert_close("simple_gla", o_ref, o_gla, TOL32)
    assert_close("attn", attn_ref, attn, TOL32)
    o_ref, ht_ref = _iplr_reference(*(to_reference(x[n]) for n in "qkvab"), 8**-0.5, to_reference(x["h0"]))
    assert_close("iplr", o_ref, o_iplr, TOL32)
    assert_close("iplr ht", ht_ref, ht, TOL32)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_sizes(dtype):
    """Based with fla's usual feature dim 16 (153 Taylor features), parallel_simple_gla with scores and IPLR at
    training sizes on the GPU, against the float64 quadratic / step-by-step forms."""
    dev, B, T, H = "cuda", 2, 500, 4
    q, k = torch.randn(B, T, H, 16, device=dev) / 2, torch.randn(B, T, H, 16, device=dev) / 2
    v = torch.randn(B, T, H, 64, device=dev)
    ref = [t.double() for t in (q, k, v)]
    o = parallel_based(*(t.to(dtype) for t in (q, k, v)))
    assert_close("based", naive_parallel_based(*ref), o, tol(dtype, 4))
    g = F.logsigmoid(torch.randn(B, T, H, device=dev)) / 8
    o, attn = parallel_simple_gla(*(t.to(dtype) for t in (q, k, v)), g, output_attentions=True)
    o_ref = torch.einsum("bhij,bjhv->bihv", simple_gla_scores(*ref[:2], g.double(), 0.25), ref[2])
    assert_close("simple_gla", o_ref, o, tol(dtype, 4))
    assert_close("attn", simple_gla_scores(*ref[:2], g.double(), 0.25), attn, tol(dtype, 4))
    x = {n: t.detach().to(dev) for n, t in _iplr_inputs(1, 300, H=4, K=64, V=64).items()}
    o, ht = chunk_iplr_delta_rule(*(x[n].to(dtype) for n in "qkvab"), initial_state=x["h0"], output_final_state=True)
    o_ref, ht_ref = _iplr_reference(*(x[n].double() for n in "qkvab"), 64**-0.5, x["h0"].double())
    assert_close("iplr", o_ref, o, tol(dtype, 8))
    assert_close("iplr ht", ht_ref, ht, tol(dtype, 8))


# ---------------------------------------------------------------- fla.ops.common internal names


@pytest.mark.parametrize("gate", ["g", "g_gamma"])
def test_common_fused_chunk_is_simple_gla(gate):
    """``fla.ops.common.fused_chunk.fused_chunk`` (fla's internal name) runs simple GLA with fla's arguments."""
    from fla.ops.common.fused_chunk import fused_chunk

    B, T, H, K, V = 2, 37, 2, 8, 6
    q, k, v = (torch.randn(B, T, H, d) for d in (K, K, V))
    gates = {"g": F.logsigmoid(torch.randn(B, T, H))} if gate == "g" else {"g_gamma": -torch.rand(H)}
    h0 = torch.randn(B, H, K, V)
    with using("torch"):
        o, ht = fused_chunk(q, k, v, **gates, scale=0.3, initial_state=h0, output_final_state=True)
        ref_o, ref_ht = chunk_simple_gla(q, k, v, **gates, scale=0.3, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref_o)
    torch.testing.assert_close(ht, ref_ht)
    with pytest.raises(ValueError, match="g or g_gamma, not both"):
        fused_chunk(q, k, v, g=torch.zeros(B, T, H), g_gamma=torch.zeros(H))


def test_common_fused_beta_sigmoid():
    """``fla.ops.common.gate.fused_beta_sigmoid``: ``scale * sigmoid(x)`` in float32, the gradient in x's dtype."""
    from fla.ops.common.gate import fused_beta_sigmoid, fused_beta_sigmoid_bwd, fused_beta_sigmoid_fwd

    x = torch.randn(4, 5, dtype=torch.bfloat16, requires_grad=True)
    y = fused_beta_sigmoid(x, 2.0)
    s = torch.sigmoid(x.detach().double())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), 2.0 * s, atol=1e-6, rtol=1e-6)
    dy = torch.randn(4, 5)
    (dx,) = torch.autograd.grad(y, x, dy)
    expected = (dy.double() * 2.0 * s * (1 - s)).to(torch.bfloat16)
    assert dx.dtype == torch.bfloat16
    torch.testing.assert_close(dx, expected)
    torch.testing.assert_close(fused_beta_sigmoid_bwd(x.detach(), dy, 2.0), expected)
    torch.testing.assert_close(fused_beta_sigmoid_fwd(x.detach(), 2.0), y.detach())


def _kkt_reference(k, g, beta, bounds, BT):
    """float64 chunk by chunk of each sequence ``[bos, eos)``: ``A[t, h, s - c0] = beta_t k_t . k_s 2^(g_t - g_s)``
    for ``c0 <= s < t`` in ``t``'s chunk (fla 0.6.0's ``chunk_scaled_dot_kkt_fwd``)."""
    T, HV = beta.shape
    G = HV // k.shape[1]
    A = torch.zeros(T, HV, BT, dtype=torch.float64)
    for bos, eos in zip(bounds[:-1], bounds[1:]):
        for t in range(bos, eos):
            c0 = bos + (t - bos) // BT * BT
            for s in range(c0, t):
                for h in range(HV):
                    gate = 1.0 if g is None else 2.0 ** (g[t, h] - g[s, h]).item()
                    A[t, h, s - c0] = beta[t, h] * (k[t, h // G] @ k[s, h // G]) * gate
    return A


@pytest.mark.parametrize("layout", ["dense", "varlen"])
@pytest.mark.parametrize("gated", [False, True])
def test_common_chunk_scaled_dot_kkt_fwd(layout, gated):
    """``fla.ops.common.chunk_scaled_dot_kkt.chunk_scaled_dot_kkt_fwd`` (fla's internal name): the beta-scaled,
    base-2-gated strictly-lower ``k k^T`` per chunk, chunks restarting per sequence (length-1 ones included), two
    value heads per key head, T not a multiple of the chunk."""
    from fla.ops.common.chunk_scaled_dot_kkt import chunk_scaled_dot_kkt_fwd

    B, T, H, HV, K, BT = (2, 21, 1, 2, 5, 8) if layout == "dense" else (1, 30, 1, 2, 5, 8)
    k = torch.randn(B, T, H, K)
    beta = torch.rand(B, T, HV)
    g = -torch.rand(B, T, HV).cumsum(1) if gated else None
    cu = None if layout == "dense" else torch.tensor([0, 1, 19, 20, 30])
    A = chunk_scaled_dot_kkt_fwd(k, g=g, beta=beta, cu_seqlens=cu, chunk_size=BT, output_dtype=torch.float32)
    assert A.shape == (B, T, HV, BT) and A.dtype == torch.float32
    for b in range(B):
        bounds = [0, T] if cu is None else cu.tolist()
        ref = _kkt_reference(k[b].double(), None if g is None else g[b].double(), beta[b].double(), bounds, BT)
        assert_close("A", ref, A[b], TOL32)
    with pytest.raises(ValueError, match="beta is required"):
        chunk_scaled_dot_kkt_fwd(k)
    with pytest.raises(ValueError, match=r"beta has shape \(2, 3, 2\)"):
        chunk_scaled_dot_kkt_fwd(torch.randn(2, 4, 1, 5), beta=torch.rand(2, 3, 2))
    with pytest.raises(ValueError, match=r"g has shape \(2, 4, 1\), expected beta's \(2, 4, 2\)"):
        chunk_scaled_dot_kkt_fwd(torch.randn(2, 4, 1, 5), g=torch.zeros(2, 4, 1), beta=torch.rand(2, 4, 2))
