"""What only the MoM family has (the conformance suite runs the shared checks): the load-balancing loss and its
place in the model's loss, the router logits in the output, FLOPs of top-k memories, TP refused, config errors."""

import pytest
import torch
import torch.nn.functional as F

from fla.models import MomConfig
from fla.models.mom import load_balancing_loss_func
from fla.models.mom.modeling_mom import MomForCausalLM
from tests.fla.models.families import BY_TYPE, HYBRID, V, ids, padded_batches
from tests.harness import DEVICE, assert_close, tol

FAMILY = BY_TYPE["mom"]


def loop_balance_loss(logits, num_experts, top_k, mask=None):
    """Switch Transformer's loss written per (layer, token): E * sum_e (share of choices of e) * (mean prob of e),
    the share counted per choice rank as fla does (sum over ranks of the fraction of tokens whose rank-j pick is e)."""
    rows = [(layer, n) for layer in range(len(logits)) for n in range(logits[0].shape[0])]
    weight = {r: 1.0 if mask is None else float(mask.reshape(-1)[r[1]]) for r in rows}
    total = sum(weight.values())
    loss = 0.0
    for e in range(num_experts):
        prob = sum(weight[r] * logits[r[0]][r[1]].softmax(-1)[e] for r in rows) / total
        for j in range(top_k):
            share = sum(weight[r] * float(logits[r[0]][r[1]].softmax(-1).topk(top_k).indices[j] == e) for r in rows)
            loss = loss + share / total * prob
    return loss * num_experts


@pytest.mark.parametrize("masked", [False, True])
def test_load_balancing_loss_matches_loop(masked):
    torch.manual_seed(0)
    logits = tuple(torch.randn(2 * 5, 4, dtype=torch.float64, device=DEVICE) for _ in range(3))
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], device=DEVICE) if masked else None
    got = load_balancing_loss_func(logits, 4, 2, mask)
    # float32 choice shares, as in fla
    assert_close("aux loss", torch.as_tensor(loop_balance_loss(logits, 4, 2, mask)), got, tol(torch.float32, 10))
    # perfectly balanced top-1 routing with uniform probabilities gives 1
    uniform = (torch.eye(4, dtype=torch.float64, device=DEVICE) * 1e-9,)
    assert_close("balanced", torch.tensor(1.0, dtype=torch.float64), load_balancing_loss_func(uniform, 4, 1), 1e-6)
    assert load_balancing_loss_func((), 4, 2) == 0 and load_balancing_loss_func(None, 4, 2) == 0


def test_loss_is_cross_entropy_plus_scaled_aux_loss():
    model = FAMILY.model("plain", aux_loss_scale=0.5).train()
    x = ids(2, 13)
    out = model(x, labels=x)
    assert len(out.router_logits) == model.config.num_hidden_layers
    assert all(r.shape == (2 * 13, model.config.num_memories) for r in out.router_logits)
    aux = load_balancing_loss_func(out.router_logits, model.config.num_memories, model.config.topk)
    assert_close("aux_loss", aux, out.aux_loss, tol(torch.float32))
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, V).double(), x[:, 1:].reshape(-1))
    assert_close("loss", ce + 0.5 * aux.double(), out.loss, tol(torch.float32, 10))
    # the aux loss trains the router: its gradient differs from the cross-entropy-only one
    gate = model.model.layers[0].attn.gate.weight
    (g_aux,) = torch.autograd.grad(out.loss, gate)
    (g_ce,) = torch.autograd.grad(model(x, labels=x).loss - 0.5 * model(x, labels=x).aux_loss, gate)
    assert not torch.allclose(g_aux, g_ce)
    assert model(x).aux_loss is None, "no labels, no aux loss"


def test_hybrid_attention_layers_have_no_router_logits():
    model = FAMILY.model("single_kv_top1_hybrid").eval()
    out = model(ids(1, 7))
    assert len(out.router_logits) == 1  # layer 1 is softmax attention


def test_aux_loss_padded_equals_varlen():
    """Padding is left out of the aux loss: a padded batch and the same sequences packed give the same value."""
    model = FAMILY.model("plain", aux_loss_scale=0.5).train()
    _, padded, mask, packed, cu = padded_batches([9, 1, 14], "left")
    labels = padded.masked_fill(mask == 0, -100)
    pad = model(padded, attention_mask=mask, labels=labels)
    var = model(packed, cu_seqlens=cu, labels=packed)
    assert_close("aux loss", var.aux_loss, pad.aux_loss, tol(torch.float32, 10))


def test_flops_count_topk_memories_and_the_shared_one():
    config = FAMILY.config("plain")
    model = MomForCausalLM(config)
    n = sum(p.numel() for p in model.parameters())
    emb = model.model.embeddings.weight.numel()
    H, K, M, k, L = config.num_heads, config.head_dim, config.num_memories, config.topk, config.num_hidden_layers
    per_memory = (2 * H * K + 2 * H) * config.hidden_size  # k, v, b, a projections (expand_v = 1)
    heads = H * (k + 1)  # top-k memories + the shared one
    mixer = 3 * heads * (4 * K * K + 2 * 64 * 2 * K) + 3 * heads * 2 * 64 * K
    expected = 6 * (n - emb - (M - k) * per_memory * L) + L * mixer
    assert model.flops_per_token(2048) == pytest.approx(expected)


def test_tensor_parallel_is_refused_with_a_clear_error():
    from flame.config import ConfigError
    from flame.parallelize import check_tp_supported

    with pytest.raises(ConfigError, match="TP not supported for mom"):
        check_tp_supported(FAMILY.config("plain"), 2)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="mom_backend='gla' is not one of"):
        MomConfig(mom_backend="gla")
    with pytest.raises(ValueError, match="topk=5 must not exceed num_memories=4"):
        MomConfig(topk=5)
    with pytest.raises(ValueError, match="aux_loss_scale=-1 must be a number >= 0"):
        MomConfig(aux_loss_scale=-1)
    with pytest.raises(ValueError, match=r"head_dim \* expand_v = 256 \* 1.001 is not an integer"):
        MomConfig(expand_v=1.001)
    with pytest.raises(ValueError, match="num_memories=0 must be a positive integer"):
        MomConfig(num_memories=0)
    config = MomConfig(**HYBRID, num_hidden_layers=2, hidden_size=64, num_heads=2)
    assert config.attn["layers"] == [1]


def test_gradient_checkpointing_keeps_the_aux_loss_gradient():
    """The router logits leave each checkpointed block through a list: the aux loss still reaches the router."""
    model = FAMILY.model("plain", aux_loss_scale=0.5).train()
    x = ids(2, 11)
    g0 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    model.gradient_checkpointing_enable()
    g1 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), g0, g1):
        assert_close(f"d{name}", a, b, tol(torch.float32, 20))


def test_mixer_init_is_fla060s():
    """fla 0.6.0's MoM layer initializes its projections xavier-uniform (gain 2 ** -2.5), whatever
    initializer_range says, and the rest of the model keeps the shared normal init; also after a meta-device build."""
    with torch.device("meta"):
        meta = MomForCausalLM(FAMILY.config("plain", hidden_size=256, intermediate_size=512))
    meta.to_empty(device=DEVICE)
    meta.init_weights()
    for model in (FAMILY.model("plain", hidden_size=256, intermediate_size=512), meta):
        attn = model.model.layers[0].attn
        for name in ("q_proj", "gate", "g_proj", "o_proj", "k_proj.1", "shared_v"):
            w = attn.get_submodule(name).weight
            xavier = 2**-2.5 * (6 / sum(w.shape)) ** 0.5  # the bound of the uniform
            assert w.abs().max() <= xavier and w.abs().max() > 0.9 * xavier, name
        assert abs(model.model.layers[0].mlp.up_proj.weight.std().item() / model.config.initializer_range - 1) < 0.1
        assert bool((attn.A_log.exp() <= 16).all()) and bool((attn.A_log.exp() > 0).all())
