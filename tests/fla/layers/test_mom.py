"""MomAttention == its formula written out with loops: per document, per memory, the routed tokens' naive gated
delta-rule recurrence (float64), weighted by the routing scores, plus the shared memory."""

import pytest
import torch
import torch.nn.functional as F

from fla.layers import MomAttention
from fla.models import FLACache
from fla.ops.gated_delta_rule import naive_recurrent_gated_delta_rule
from tests.fla.layers.test_delta_net import causal_conv, l2, rms
from tests.harness import DEVICE, assert_close, tol

RATIO = tol(torch.float64, 1e3)
D = 40


def memory_output(layer, q, k, v, a, b):
    """One memory over one sequence of its tokens: projections ``[L, width]`` -> ``o [L, H, V]``."""
    H, K, V = layer.num_heads, layer.head_k_dim, layer.head_v_dim
    if layer.use_short_conv:
        convs = (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)
        q, k, v = (causal_conv(t[None], conv, F.silu)[0] for t, conv in zip((q, k, v), convs))
    else:
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    q, k, v = l2(q.unflatten(-1, (H, K))), l2(k.unflatten(-1, (H, K))), v.unflatten(-1, (H, V))
    g = -layer.A_log.exp() * F.softplus(a + layer.dt_bias)
    o, _ = naive_recurrent_gated_delta_rule(q[None], k[None], v[None], g[None], b.sigmoid()[None])
    return o[0]


def reference_document(layer, x):
    """The layer's output for one document ``x [L, D]``, following fla 0.6.0's MomAttention."""
    probs = layer.gate(x).softmax(-1)
    weights, chosen = probs.topk(layer.topk, -1)
    weights = weights / weights.sum(-1, keepdim=True)
    q = layer.q_proj(x)
    out = x.new_zeros(x.shape[0], layer.num_heads, layer.head_v_dim)
    for e in range(layer.num_memories):
        hit = chosen == e  # [L, topk]
        tokens = hit.any(1).nonzero().squeeze(1)
        if tokens.numel() == 0:
            continue
        xs = x[tokens]
        if layer.single_kv_proj:
            projs = (layer.shared_k, layer.shared_v, layer.shared_a, layer.shared_b)
        else:
            projs = (layer.k_proj[e], layer.v_proj[e], layer.a_proj[e], layer.b_proj[e])
        o = memory_output(layer, q[tokens], *(p(xs) for p in projs))
        out = out.index_add(0, tokens, (weights * hit)[tokens].sum(1)[:, None, None] * o)
    if layer.shared_mem:
        out = out + memory_output(layer, q, layer.shared_k(x), layer.shared_v(x), layer.shared_a(x), layer.shared_b(x))
    o = rms(out, layer.o_norm.weight, layer.o_norm.eps)
    if layer.use_output_gate:
        o = o * F.silu(layer.g_proj(x).unflatten(-1, (layer.num_heads, layer.head_v_dim)))
    return layer.o_proj(o.flatten(-2))


def reference(layer, x):
    """Each row of ``x [B, T, D]`` is one document."""
    return torch.stack([reference_document(layer, row) for row in x])


CONFIGS = {
    "shared_top2": dict(num_memories=4, topk=2, shared_mem=True),
    "single_kv_top1_no_gate": dict(num_memories=3, topk=1, single_kv_proj=True, use_output_gate=False),
    "noconv_wide_v": dict(num_memories=3, topk=2, use_short_conv=False, expand_v=1.5, shared_mem=True),
    "all_memories_conv_bias": dict(num_memories=3, topk=3, conv_size=3, conv_bias=True),
}


def make(config, **kw):
    torch.manual_seed(0)
    layer = MomAttention(hidden_size=D, head_dim=10, num_heads=2, **{**CONFIGS[config], **kw})
    layer = layer.to(DEVICE, torch.float64)
    for p in layer.parameters():  # norms start at ones and conv biases at zero: make every weight matter
        p.data.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_layer_matches_formula(config, training):
    layer = make(config).train(training)
    x = torch.randn(2, 23, D, device=DEVICE, dtype=torch.float64)
    out, attn, cache, router_logits = layer(x)
    assert attn is None and cache is None
    assert_close("out", reference(layer, x), out, RATIO)
    assert_close("router_logits", layer.gate(x).reshape(-1, layer.num_memories), router_logits, RATIO)
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_every_gradient_matches_formula():
    layer = make("shared_top2").train()
    x = torch.randn(2, 19, D, device=DEVICE, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 19, D, device=DEVICE, dtype=torch.float64)
    params = dict(layer.named_parameters())
    got = torch.autograd.grad((layer(x)[0] * dy).sum(), [x, *params.values()])
    ref = torch.autograd.grad((reference(layer, x) * dy).sum(), [x, *params.values()])
    for name, a, b in zip(["x", *params], ref, got):
        assert_close(f"d{name}", a, b, RATIO)


@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
def test_varlen_and_padded_documents_stay_apart(training):
    """Packed documents (length-1 ones included) and a right-padded batch: each document as if alone."""
    layer = make("shared_top2").train(training)
    lens = [9, 1, 14, 1]
    docs = [torch.randn(n, D, device=DEVICE, dtype=torch.float64) for n in lens]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    out, _, _, logits = layer(torch.cat(docs)[None], cu_seqlens=cu)
    assert logits.shape == (sum(lens), layer.num_memories)
    padded = torch.zeros(len(lens), max(lens), D, device=DEVICE, dtype=torch.float64)
    mask = torch.zeros(len(lens), max(lens), dtype=torch.long, device=DEVICE)
    for i, d in enumerate(docs):
        padded[i, : len(d)], mask[i, : len(d)] = d, 1
    out_pad, _, _, logits_pad = layer(padded, attention_mask=mask)
    assert logits_pad.shape == (len(lens) * max(lens), layer.num_memories)
    assert bool((logits_pad[~mask.reshape(-1).bool()] == 0).all()), "padding positions carry zero logits"
    for i, d in enumerate(docs):
        ref = reference_document(layer, d)
        assert_close(f"varlen doc {i}", ref, out[0, cu[i] : cu[i + 1]], RATIO)
        assert_close(f"padded row {i}", ref, out_pad[i, : len(d)], RATIO)


@pytest.mark.parametrize("config", ["shared_top2", "single_kv_top1_no_gate"])
def test_prefill_then_decode_with_cache_equals_full_forward(config):
    """Chunk prefill (> 64 tokens) into the cache, then single-token fused_recurrent steps: one recurrent and one
    conv state per memory and row, and a memory a step's token is not routed to keeps its state."""
    layer = make(config, layer_idx=0).eval()
    B, H, K, V, M = 2, layer.num_heads, layer.head_k_dim, layer.head_v_dim, layer.num_memories
    x = torch.randn(B, 70, D, device=DEVICE, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)[0]
        cache = FLACache()
        outs = [layer(x[:, :67], past_key_values=cache)[0]]
        for t in range(67, 70):
            before = cache[0]["recurrent_state"][0].clone()
            before_conv = cache[0]["conv_state"][0][0].clone()
            outs.append(layer(x[:, t : t + 1], past_key_values=cache)[0])
            chosen = layer.gate(x[:, t]).topk(layer.topk, -1).indices  # [B, topk]
            for b in range(B):
                for e in range(M):
                    same = torch.equal(cache[0]["recurrent_state"][0][b, e], before[b, e])
                    same_conv = torch.equal(cache[0]["conv_state"][0][0][b, e], before_conv[b, e])
                    assert same == same_conv == (e not in chosen[b].tolist()), (t, b, e)
    states, shared = cache[0]["recurrent_state"]
    assert states.shape == (B, M, H, K, V)
    assert (shared is not None) == layer.shared_mem
    if layer.shared_mem:
        assert shared.shape == (B, H, K, V)
    assert cache[0]["conv_state"][0][2].shape == (B, M, layer.value_dim, layer.conv_size)
    assert_close("decoded", full, torch.cat(outs, 1), RATIO)


def test_capacity_drops_nothing():
    """fla 0.6.0 never drops a routed token: the output does not depend on ``capacity``."""
    x = torch.randn(1, 30, D, device=DEVICE, dtype=torch.float64)
    full = make("shared_top2", capacity=1.0)(x)[0]
    assert torch.equal(make("shared_top2", capacity=0.1)(x)[0], full)


def test_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="topk=5 must be an int in 1 .. num_memories=4"):
        MomAttention(hidden_size=32, head_dim=8, num_heads=2, num_memories=4, topk=5)
    with pytest.raises(ValueError, match="num_memories=0 must be a positive int"):
        MomAttention(hidden_size=32, head_dim=8, num_heads=2, num_memories=0)
    with pytest.raises(ValueError, match=r"head_dim \* expand_v = 8 \* 1.1 is not a positive integer"):
        MomAttention(hidden_size=32, head_dim=8, num_heads=2, expand_v=1.1)
    with pytest.raises(ValueError, match="mode='fused_chunk' is not one of"):
        MomAttention(hidden_size=32, head_dim=8, num_heads=2, mode="fused_chunk")
    layer = MomAttention(hidden_size=32, head_dim=8, num_heads=2, num_memories=2, topk=1)
    with pytest.raises(ValueError, match=r"hidden_states has shape \[2, 5, 16\], expected \[B, T, 32\]"):
        layer(torch.randn(2, 5, 16, device=DEVICE))
    with pytest.raises(ValueError, match="layer_idx is required"):
        layer(torch.randn(2, 5, 32, device=DEVICE), past_key_values=FLACache())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_kernels_match_float64_formula(dtype):
    """Real widths on CUDA (Triton chunk and fused_recurrent kernels): packed documents (length-1 ones included)
    in training mode, then a prefill + cached decoding, against the float64 formula."""
    torch.manual_seed(0)
    layer = MomAttention(
        hidden_size=256, head_dim=64, num_heads=4, num_memories=4, topk=2, shared_mem=True, layer_idx=0
    )
    layer = layer.to("cuda", dtype)
    ref_layer = MomAttention(hidden_size=256, head_dim=64, num_heads=4, num_memories=4, topk=2, shared_mem=True)
    ref_layer.load_state_dict(layer.state_dict())
    ref_layer = ref_layer.double()
    ratio = tol(dtype, 5) if dtype != torch.float32 else 2e-3  # float32: TF32 matmuls may be on
    lens = [1, 300, 77, 1, 150]
    x = torch.randn(sum(lens), 256, device="cuda", dtype=dtype)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    out = layer.train()(x[None], cu_seqlens=cu)[0][0]
    for i in range(len(lens)):
        ref = reference_document(ref_layer, x[cu[i] : cu[i + 1]].double().cpu())
        assert_close(f"doc {i}", ref, out[cu[i] : cu[i + 1]].float().cpu(), ratio)
    rows = torch.randn(2, 103, 256, device="cuda", dtype=dtype)
    with torch.no_grad():
        cache = FLACache()
        outs = [layer.eval()(rows[:, :100], past_key_values=cache)[0]]
        for t in range(100, 103):
            outs.append(layer(rows[:, t : t + 1], past_key_values=cache)[0])
    decoded = torch.cat(outs, 1).float().cpu()
    assert_close("decoded", reference(ref_layer, rows.double().cpu()), decoded, ratio)


def test_layer_is_left_to_eager_under_compile():
    """torch.compile runs the MoM layer eagerly (inductor failed on its routed pieces on an H100, torch 2.11): a
    compiled call traces no graph of the layer's own, and gives the eager output."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    layer = MomAttention(hidden_size=32, num_heads=2, head_dim=16, num_memories=3, topk=2).to(DEVICE)
    x = torch.randn(2, 9, 32, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: layer(x)[0], backend=backend)
    assert_close("o", layer(x)[0], compiled(x), 1e-6)
    assert graphs == []
