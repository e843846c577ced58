"""torchrun helper (4 or 2 gloo ranks): context-parallel ops, convolutions, layers and models against the same call
on whole sequences.

Usage: ``python -m torch.distributed.run --nproc_per_node=4 tests/fla/context_parallel/cp_worker.py OUT.json``
(2 processes: CP = 2 only; ``CP_WORKER_DEVICE=cuda``: on the GPU; ``CP_WORKER_ONLY=<regex>``: those cases only)

Every case runs at CP = 2 (ranks {0, 1} and {2, 3}, each pair the same case) and CP = 4: each rank computes the
whole-sequence reference itself (float32, CPU), then its slice through :mod:`fla.context_parallel`, and compares its
slice of the outputs and of every input's gradient (the loss: every rank's outputs against one random cotangent,
summed over the ranks), and the final states on the rank that holds them. Rank 0 writes ``{case: worst relative
error over the ranks}`` (or the first rank's exception) to ``OUT.json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fla.context_parallel import (  # noqa: E402
    CPContext,
    conv_with_halo,
    cp_abc,
    cp_chunk_op,
    cp_gsa,
    cp_hgrn,
    cp_lightnet,
    cp_linear_attn,
    cp_selective_scan,
)
from fla.layers.abc import ABCAttention  # noqa: E402
from fla.layers.attn import Attention  # noqa: E402
from fla.layers.based import BasedLinearAttention  # noqa: E402
from fla.layers.delta_net import DeltaNet  # noqa: E402
from fla.layers.forgetting_attn import ForgettingAttention  # noqa: E402
from fla.layers.gated_deltanet import GatedDeltaNet  # noqa: E402
from fla.layers.gated_deltaproduct import GatedDeltaProduct  # noqa: E402
from fla.layers.gla import GatedLinearAttention  # noqa: E402
from fla.layers.gsa import GatedSlotAttention  # noqa: E402
from fla.layers.hgrn import HGRNAttention  # noqa: E402
from fla.layers.hgrn2 import HGRN2Attention  # noqa: E402
from fla.layers.kda import KimiDeltaAttention  # noqa: E402
from fla.layers.lightnet import LightNetAttention  # noqa: E402
from fla.layers.linear_attn import LinearAttention  # noqa: E402
from fla.layers.mamba import Mamba  # noqa: E402
from fla.layers.mamba2 import Mamba2  # noqa: E402
from fla.layers.mesa_net import MesaNet  # noqa: E402
from fla.layers.mla import MultiheadLatentAttention  # noqa: E402
from fla.layers.multiscale_retention import MultiScaleRetention  # noqa: E402
from fla.layers.nsa import NativeSparseAttention  # noqa: E402
from fla.layers.path_attn import PaTHAttention  # noqa: E402
from fla.layers.rebased import ReBasedLinearAttention  # noqa: E402
from fla.layers.rodimus import RodimusAttention  # noqa: E402
from fla.modules.conv import ShortConvolution  # noqa: E402
from fla.ops.abc import chunk_abc  # noqa: E402
from fla.ops.delta_rule import chunk_delta_rule  # noqa: E402
from fla.ops.gated_delta_rule import chunk_gated_delta_rule  # noqa: E402
from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule  # noqa: E402
from fla.ops.gla import chunk_gla  # noqa: E402
from fla.ops.gsa import chunk_gsa  # noqa: E402
from fla.ops.hgrn import chunk_hgrn  # noqa: E402
from fla.ops.kda import chunk_kda  # noqa: E402
from fla.ops.lightnet import chunk_lightnet  # noqa: E402
from fla.ops.linear_attn import chunk_linear_attn  # noqa: E402
from fla.ops.mamba import chunk_selective_scan  # noqa: E402
from fla.ops.retention import chunk_retention  # noqa: E402
from fla.ops.simple_gla import chunk_simple_gla  # noqa: E402
from tests.fla.models.families import HYBRID  # noqa: E402

T = 96
H, K, V = 2, 8, 6
# CP_WORKER_DEVICE=cuda: every rank on the one GPU (gloo gathers CUDA tensors through the host), the ops on their
# Triton kernels (float32: exact multiplies); cpu: their PyTorch forms
DEVICE = torch.device(os.environ.get("CP_WORKER_DEVICE", "cpu"))
if os.environ.get("FLA_TEST_ONE_CONFIG") == "1":  # as tests/conftest.py: one config per autotuner key
    from triton.runtime.autotuner import Autotuner

    from tests.harness import one_config_per_key

    one_config_per_key(Autotuner)
LAYOUTS = {
    "dense": None,
    # documents passing through a whole rank (5..70 at CP=4), of length 1 (70..71), crossing every boundary
    "packed": [0, 5, 70, 71, 96],
    # and one boundary on a rank boundary (48: CP=2's and CP=4's)
    "packed_cut": [0, 5, 48, 70, 71, 96],
}


def gates(name: str, B: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The op's gate tensors after q, k, v (time at dim 1), in their usual ranges."""
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    if name == "gla":
        return (F.logsigmoid(r(B, T, H, K) + 2),)
    if name == "simple_gla":
        return (F.logsigmoid(r(B, T, H) + 2),)
    if name == "delta_rule":
        return (u(B, T, H),)
    if name in ("gated_delta_rule", "kda"):
        g = F.logsigmoid(r(B, T, H, K) + 2) if name == "kda" else F.logsigmoid(r(B, T, H) + 2)
        return g, u(B, T, H)
    if name == "dplr":
        kk = F.normalize(r(B, T, H, K), dim=-1)
        return -kk, kk * u(B, T, H, K), -0.6 * u(B, T, H, K)
    return ()


OPS = {
    "gla": chunk_gla,
    "simple_gla": chunk_simple_gla,
    "retention": chunk_retention,
    "delta_rule": chunk_delta_rule,
    "gated_delta_rule": chunk_gated_delta_rule,
    "kda": chunk_kda,
    "dplr": chunk_dplr_delta_rule,
}


def worst(errs: list[float]) -> float:
    """The largest error, NaN if any is (Python's ``max`` keeps whichever comes first of a NaN and a number)."""
    return float(torch.tensor(errs, dtype=torch.float64).max())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def context(group, layout, B):
    if layout is None:
        return CPContext.dense(group, T), None
    cu = torch.tensor(layout, dtype=torch.int32)
    return CPContext.packed(group, cu, device=DEVICE), cu.to(DEVICE)


def op_case(name: str, layout, group) -> float:
    B = 2 if layout is None else 1
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{layout}".encode()))  # the same on every rank
    q, k = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, K, generator=gen)
    if name in ("delta_rule", "gated_delta_rule", "kda"):
        k = F.normalize(k, dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    inputs = [t.to(DEVICE) for t in (q, k, v, *gates(name, B, gen))]
    do = torch.randn(B, T, H, V, generator=gen).to(DEVICE)
    dht = torch.randn(B if layout is None else len(layout) - 1, H, K, V, generator=gen).to(DEVICE)
    ctx, cu = context(group, layout, B)
    op = OPS[name]
    whole = [t.clone().requires_grad_() for t in inputs]
    o, ht = op(*whole, output_final_state=True, cu_seqlens=cu)
    ((o * do).sum() + (ht * dht).sum()).backward()
    local = [ctx.shard(t).detach().clone().requires_grad_() for t in inputs]
    o_cp, ht_cp = cp_chunk_op(op, ctx, *local[:3], *local[3:], output_final_state=True, cu_seqlens=ctx.cu_seqlens)
    return worst(split_errors(ctx, layout, (o, ht, do, dht), (o_cp, ht_cp), local, whole))


def split_errors(ctx: CPContext, layout, reference, split, local, whole) -> list[float]:
    """Backward through this rank's slice and the relative errors against the whole sequences: of the outputs, of
    the final states of the documents that end on this rank (all but a piece continuing to the next rank) and of
    every sequence input's gradient. ``reference = (o, ht, do, dht)`` on the whole sequences (its backward done),
    ``split = (o_cp, ht_cp)``; ``local`` / ``whole``: the inputs (this rank's slices / whole)."""
    o, ht, do, dht = reference
    o_cp, ht_cp = split
    ends = _ending_documents(ctx, layout)
    loss = (o_cp * ctx.shard(do)).sum()
    if ends:
        loss = loss + (ht_cp[[i for i, _ in ends]] * dht[[j for _, j in ends]]).sum()
    loss.backward()
    errs = [rel(o_cp, ctx.shard(o))]
    if ends:
        errs.append(rel(ht_cp[[i for i, _ in ends]], ht[[j for _, j in ends]]))
    return errs + [rel(t.grad, ctx.shard(w.grad)) for t, w in zip(local, whole)]


def _ending_documents(ctx: CPContext, layout) -> list[tuple[int, int]]:
    """``(local piece, global document)`` of the documents whose last token is on this rank."""
    lo, hi = ctx.rank * ctx.local_len, (ctx.rank + 1) * ctx.local_len
    if layout is None:
        return [(0, 0), (1, 1)] if ctx.rank == ctx.world - 1 else []
    pieces = [b for b in sorted(set(layout)) if lo < b < hi]
    starts = [lo, *pieces]
    out = []
    for j, (s, e) in enumerate(zip(layout, layout[1:])):
        if e > s and lo < e <= hi:
            out.append((starts.index(max(s, lo)), j))
    return out


def flat(o: torch.Tensor, states: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """An op's ``(o, (state, state, ..))`` -> ``(o, [N, sum of the states' sizes])``: its final states in one row
    per sequence."""
    return o, torch.cat([t.flatten(1) for t in states], 1)


def own_signature_case(name: str, layout, group) -> float:
    """An op with its own signature over the split against the whole sequences: Mamba's selective scan (every
    optional term: D, z, dt_bias with softplus), HGRN, normalized linear attention, GSA, ABC or LightNet (several
    final states, flattened here). Outputs, final states and every input's gradient (A, D and dt_bias summed over
    the ranks)."""
    B, Di, Ds = (2 if layout is None else 1), 12, 5
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}/{layout}".encode()))
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    ctx, cu = context(group, layout, B)
    if name == "selective_scan":
        seq = [r(B, T, Di), r(B, T, Di) - 1.0, r(B, T, Ds), r(B, T, Ds), r(B, T, Di)]  # x, dt, B, C, z
        params = [-torch.exp(0.5 * r(Di, Ds)), r(Di), r(Di)]  # A, D, dt_bias
        out, state = (Di,), (Di, Ds)

        def ops(x, dt, Bm, C, z, A, D, dt_bias):
            args = (x, dt, A, Bm, C, D, z, dt_bias, True)
            return lambda **kw: chunk_selective_scan(*args, **kw), lambda **kw: cp_selective_scan(ctx, *args, **kw)
    elif name == "hgrn":
        seq, params, out, state = [r(B, T, Di), F.logsigmoid(r(B, T, Di) + 2)], [], (Di,), (Di,)  # x, g

        def ops(x, g):
            return lambda **kw: chunk_hgrn(x, g, **kw), lambda **kw: cp_hgrn(ctx, x, g, **kw)
    elif name == "gsa":  # GQA (2 query heads per key head), 5 slots
        g = F.logsigmoid(r(B, T, 1, 5) + 2) / 4
        seq, params, out = [r(B, T, 2, K), r(B, T, 1, K), r(B, T, 1, V), 1 - g.exp(), g], [], (2, V)
        state = (K * 5 + 5 * V,)

        def ops(q, k, v, s, g):
            return (lambda **kw: flat(*chunk_gsa(q, k, v, s, g, **kw)),
                    lambda **kw: flat(*cp_gsa(ctx, q, k, v, s, g, **kw)))  # fmt: skip
    elif name == "abc":  # slot logits of both signs, some large
        seq, params, out = [r(B, T, H, K), r(B, T, H, K), r(B, T, H, V), 3 * r(B, T, H, 5)], [], (H, V)
        state = (H * K * 5 + H * 5 * V + H * 5,)

        def ops(q, k, v, s):
            return (lambda **kw: flat(*chunk_abc(q, k, v, s, **kw)),
                    lambda **kw: flat(*cp_abc(ctx, q, k, v, s, **kw)))  # fmt: skip
    elif name == "lightnet":  # key logits of both signs, some large
        seq, params, out, state = [r(B, T, H, K), 3 * r(B, T, H, K), r(B, T, H, V)], [], (H, V), (H * K * V + H * K,)

        def ops(q, k, v):
            return (lambda **kw: flat(*chunk_lightnet(q, k, v, **kw)),
                    lambda **kw: flat(*cp_lightnet(ctx, q, k, v, **kw)))  # fmt: skip
    else:  # positive feature-mapped q, k: denominators away from 0
        u = lambda *s: torch.rand(*s, generator=gen) + 0.1  # noqa: E731
        seq, params, out, state = [u(B, T, H, K), u(B, T, H, K), r(B, T, H, V)], [], (H, V), (H * K * V + H * K,)

        def ops(q, k, v):
            return (lambda **kw: flat(*chunk_linear_attn(q, k, v, normalize=True, **kw)),
                    lambda **kw: flat(*cp_linear_attn(ctx, q, k, v, normalize=True, **kw)))  # fmt: skip

    seq, params = [t.to(DEVICE) for t in seq], [t.to(DEVICE) for t in params]
    do = r(B, T, *out).to(DEVICE)
    dht = r(B if layout is None else len(layout) - 1, *state).to(DEVICE)
    whole_seq, whole_params = [t.clone().requires_grad_() for t in seq], [t.clone().requires_grad_() for t in params]
    o, ht = ops(*whole_seq, *whole_params)[0](output_final_state=True, cu_seqlens=cu)
    ((o * do).sum() + (ht * dht).sum()).backward()
    local_seq = [ctx.shard(t).detach().clone().requires_grad_() for t in seq]
    local_params = [t.clone().requires_grad_() for t in params]
    o_cp, ht_cp = ops(*local_seq, *local_params)[1](output_final_state=True, cu_seqlens=ctx.cu_seqlens)
    errs = split_errors(ctx, layout, (o, ht, do, dht), (o_cp, ht_cp), local_seq, whole_seq)
    for t, w in zip(local_params, whole_params):  # replicated: their gradients sum over the ranks
        dist.all_reduce(t.grad, group=group)
        errs.append(rel(t.grad, w.grad))
    return worst(errs)


def conv_case(layout, group) -> float:
    B = 2 if layout is None else 1
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(3)
    conv = ShortConvolution(10, 4, bias=True, activation="silu").to(DEVICE)
    x = torch.randn(B, T, 10, generator=gen).to(DEVICE)
    dy = torch.randn(B, T, 10, generator=gen).to(DEVICE)
    ctx, cu = context(group, layout, B)
    xw = x.clone().requires_grad_()
    (conv(xw, cu_seqlens=cu)[0] * dy).sum().backward()
    want = [p.grad.clone() for p in conv.parameters()]
    conv.zero_grad()
    y_whole = conv(x, cu_seqlens=cu)[0]
    xl = ctx.shard(x).clone().requires_grad_()
    y = conv_with_halo(conv, xl, ctx, ctx.cu_seqlens)
    (y * ctx.shard(dy)).sum().backward()
    grads = [p.grad.clone() for p in conv.parameters()]
    for g in grads:  # parameters are replicated: their gradients sum over the ranks
        dist.all_reduce(g, group=group)
    errs = [rel(y, ctx.shard(y_whole)), rel(xl.grad, ctx.shard(xw.grad))]
    return worst(errs + [rel(a, b) for a, b in zip(grads, want)])


MLA = dict(hidden_size=32, num_heads=2, kv_lora_rank=10, qk_rope_head_dim=4, qk_nope_head_dim=8, qk_head_dim=12)
LAYERS = {  # every layer with its short convolutions
    "GatedLinearAttention": lambda: GatedLinearAttention(hidden_size=32, num_heads=2, use_short_conv=True),
    "MultiScaleRetention": lambda: MultiScaleRetention(hidden_size=32, num_heads=2, use_short_conv=True),
    "DeltaNet": lambda: DeltaNet(hidden_size=32, num_heads=2),
    "GatedDeltaNet": lambda: GatedDeltaNet(hidden_size=32, num_heads=2, head_dim=16),
    "KimiDeltaAttention": lambda: KimiDeltaAttention(hidden_size=32, num_heads=2, head_dim=16),
    "GatedSlotAttention": lambda: GatedSlotAttention(
        hidden_size=32, num_heads=4, num_kv_heads=2, num_slots=6, use_short_conv=True
    ),
    "MesaNet": lambda: MesaNet(hidden_size=32, num_heads=2, head_dim=16, max_cg_step_training=6),
    "ABCAttention": lambda: ABCAttention(hidden_size=32, num_heads=2, num_slots=6, use_short_conv=True),
    "LightNetAttention": lambda: LightNetAttention(
        hidden_size=32, num_heads=2, expand_ratio=8, use_short_conv=True, gate_low_rank_dim=8
    ),
    "BasedLinearAttention": lambda: BasedLinearAttention(
        hidden_size=32, num_heads=2, num_key_value_heads=2, feature_dim=4
    ),
    "ReBasedLinearAttention": lambda: ReBasedLinearAttention(
        hidden_size=32, num_heads=2, num_key_value_heads=2, feature_dim=4
    ),
    "RodimusAttention": lambda: RodimusAttention(hidden_size=32, expand_ratio=8, use_short_conv=True),
    "HGRNAttention": lambda: HGRNAttention(hidden_size=32, expand_ratio=1, use_short_conv=True),
    "HGRN2Attention": lambda: HGRN2Attention(hidden_size=32, num_heads=2, expand_ratio=8, use_short_conv=True),
    # hedgehog feature map (learned), normalized by the running key sum; no output norm (it would cancel the
    # normalizer per head)
    "LinearAttention": lambda: LinearAttention(
        hidden_size=32, num_heads=2, feature_map="hedgehog", do_feature_map_norm=True, output_norm="identity"
    ),
    "Mamba": lambda: Mamba(hidden_size=32, state_size=5, intermediate_size=24),
    "Mamba2": lambda: Mamba2(hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=2),
    # its micro-steps split with their token; no forget gate (the models' case has one)
    "GatedDeltaProduct": lambda: GatedDeltaProduct(
        hidden_size=32, num_heads=2, head_dim=16, num_householder=3, use_forget_gate=False
    ),
    # softmax attention, GQA; a window of 30 reaches across a slice of 24 (CP 4) and stays inside one of 48 (CP 2)
    "Attention": lambda: Attention(hidden_size=32, num_heads=4, num_kv_heads=2),
    "AttentionWindow": lambda: Attention(hidden_size=32, num_heads=4, num_kv_heads=2, window_size=30),
    # the latents gathered and expanded; v narrower than q/k (zero-padded heads)
    "MultiheadLatentAttention": lambda: MultiheadLatentAttention(**MLA, q_lora_rank=12, v_head_dim=6),
    "MultiheadLatentAttentionWindow": lambda: MultiheadLatentAttention(**MLA, v_head_dim=16, window_size=30),
    # blocks of 8 (a slice of 24 or 48 ends mid-block where documents start off the grid), top 3, a window of 10
    "NativeSparseAttention": lambda: NativeSparseAttention(
        hidden_size=32, num_heads=4, num_kv_heads=1, head_dim=8, block_size=8, block_counts=3, window_size=10
    ),
    # GQA, the w convolution's halo, with and without the forget gate
    "PaTHAttention": lambda: PaTHAttention(hidden_size=32, num_heads=4, num_kv_heads=2, use_forget_gate=True),
    "PaTHAttentionNoGate": lambda: PaTHAttention(hidden_size=32, num_heads=2, use_forget_gate=False, use_qk_norm=True),
    "ForgettingAttention": lambda: ForgettingAttention(
        hidden_size=32, num_heads=4, num_kv_heads=2, qk_norm=True, use_output_gate=True
    ),
    "ForgettingAttentionWindow": lambda: ForgettingAttention(hidden_size=32, num_heads=4, window_size=30),
}


# compared in float64: MesaNet's per-token CG solve runs its fixed 30 steps past convergence, where the steps are
# ratios of vanishing residuals (regularized by eps) that amplify any rounding of the states: in float32 the
# gradients of sums of many terms of both signs differ by up to 5.6e-5 (b_proj.bias), in float64 by 4.4e-6, while a
# state not passed is O(0.1)
FLOAT64 = ("MesaNet", "mesa_net")


def layer_case(name: str, layout, group, dtype: torch.dtype | None = None) -> float:
    """The layer on this rank's slice with ``cp_context`` against the same layer on the whole sequences: outputs,
    the input's gradient and every parameter's (summed over the ranks). ``dtype``: of the parameters and inputs
    (default float32; float64 for :data:`FLOAT64`)."""
    B = 2 if layout is None else 1
    torch.manual_seed(11)
    dtype = dtype or (torch.float64 if name in FLOAT64 else torch.float32)
    layer = LAYERS[name]().to(DEVICE, dtype).train()
    for p in layer.parameters():  # away from init's zeros and ones, so that every path moves the output
        p.data.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x, dy = (torch.randn(B, T, 32, generator=gen, dtype=dtype).to(DEVICE) for _ in range(2))
    ctx, cu = context(group, layout, B)
    xw = x.clone().requires_grad_()
    y_whole = layer(xw, cu_seqlens=cu)[0]
    (y_whole * dy).sum().backward()
    want = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    xl = ctx.shard(x).clone().requires_grad_()
    y = layer(xl, cu_seqlens=ctx.cu_seqlens, cp_context=ctx)[0]
    (y * ctx.shard(dy)).sum().backward()
    errs = [rel(y, ctx.shard(y_whole.detach())), rel(xl.grad, ctx.shard(xw.grad))]
    for n, p in layer.named_parameters():
        dist.all_reduce(p.grad, group=group)
        errs.append(rel(p.grad, want[n]))
    return worst(errs)


def bf16_layer_case(name: str, group) -> float:
    """:func:`layer_case` with bfloat16 parameters and inputs on packed documents (the dtypes every CP path meets in
    training; both sides round to bfloat16, so the errors are bfloat16's)."""
    return layer_case(name, LAYOUTS["packed"], group, torch.bfloat16)


# configs/<name>_tiny.json (+ overrides: "gla_hybrid" is GLA with an attention layer, "linear_attn_norm" linear
# attention with a positive feature map normalized by the running key sum)
MODELS = ("gla", "retnet", "delta_net", "gated_deltanet", "kda", "comba", "gated_deltaproduct", "hgrn",
          "hgrn2", "rwkv6", "rwkv7", "mamba", "mamba2", "samba", "mla", "linear_attn_norm", "gsa", "lightnet",
          "rodimus", "abc", "mesa_net", "nsa", "path_attn", "forgetting_transformer", "transformer",
          "gla_hybrid")  # fmt: skip
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def tiny_model(name: str, **overrides):
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(os.path.join(ROOT, "configs", f"{name}_tiny.json")) as f:
        fields = {**json.load(f), "vocab_size": 64, "initializer_range": 0.1, **overrides}
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(5)
    return AutoModelForCausalLM.from_config(config).train()


def model_case(name: str, layout, group) -> float:
    """The model (tiny config, 64 tokens of vocabulary) on this rank's slice with ``cp_context`` against the whole
    sequences: logits and every parameter's gradient (summed over the ranks)."""
    B = 2 if layout is None else 1
    if name == "gla_hybrid":
        model = tiny_model("gla", **HYBRID)
    elif name == "linear_attn_norm":
        model = tiny_model("linear_attn", norm_feature_map=True, feature_map="hedgehog")
    else:
        model = tiny_model(name)
    dtype = torch.float64 if name in FLOAT64 else torch.float32
    model = model.to(DEVICE, dtype)
    with torch.no_grad():  # zero-initialized paths (RWKV7's o_proj) would hide their mixer's gradients
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p.device))
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    ids = torch.randint(0, 64, (B, T), generator=gen).to(DEVICE)
    dl = torch.randn(B, T, 64, generator=gen, dtype=dtype).to(DEVICE)
    ctx, cu = context(group, layout, B)
    logits = model(input_ids=ids, cu_seqlens=cu).logits
    (logits * dl).sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    local = model(input_ids=ctx.shard(ids), cu_seqlens=ctx.cu_seqlens, cp_context=ctx).logits
    (local * ctx.shard(dl)).sum().backward()
    errs = [rel(local, ctx.shard(logits.detach()))]
    for n, p in model.named_parameters():
        dist.all_reduce(p.grad, group=group)
        errs.append(rel(p.grad, want[n]))
    return worst(errs)


def errors_case(group) -> float:
    """Bad input: a one-line ValueError naming the problem, before any collective."""
    import pytest

    with pytest.raises(ValueError, match="97 tokens do not split into"):
        CPContext.dense(group, 97)
    with pytest.raises(ValueError, match="non-decreasing"):
        CPContext.packed(group, torch.tensor([0, 50, 40, 96]))
    ctx = CPContext.dense(group, T)
    q = torch.randn(1, ctx.local_len, H, K)
    with pytest.raises(ValueError, match="initial_state is not supported"):
        cp_chunk_op(chunk_gla, ctx, q, q, q, q, initial_state=torch.zeros(1, H, K, K))
    with pytest.raises(ValueError, match="cu_seqlens must be given exactly when the context is packed"):
        cp_chunk_op(chunk_gla, ctx, q, q, q, q, cu_seqlens=torch.tensor([0, ctx.local_len]))
    with pytest.raises(ValueError, match="q has 5 tokens, the context's slice"):
        cp_chunk_op(chunk_gla, ctx, q[:, :5], q[:, :5], q[:, :5], q[:, :5])
    with pytest.raises(ValueError, match="shorter than the halo of 3"):
        conv_with_halo(ShortConvolution(4, 4), torch.randn(1, 2, 4), CPContext.dense(group, 2 * ctx.world), None)
    with pytest.raises(ValueError, match="shard: dim 1 has 5 tokens"):
        ctx.shard(torch.randn(1, 5))
    ids = torch.zeros(1, ctx.local_len, dtype=torch.long)
    for name, what in [("mom", "layer 0 (MomAttention)")]:
        with pytest.raises(
            ValueError, match=f"context parallel \\(cp_context\\) is not supported by {re.escape(what)}"
        ):
            tiny_model(name)(input_ids=ids, cp_context=ctx)
    based = BasedLinearAttention(hidden_size=32, num_heads=2, num_key_value_heads=2, feature_dim=4, causal=False)
    with pytest.raises(ValueError, match="BasedLinearAttention: context parallel .* not supported by this layer"):
        based(torch.randn(1, ctx.local_len, 32), cp_context=ctx)  # non-causal: every token sees its whole sequence
    layer = LAYERS["GatedLinearAttention"]()
    with pytest.raises(ValueError, match="cu_seqlens must be given exactly when cp_context is packed"):
        layer(torch.randn(1, ctx.local_len, 32), cu_seqlens=torch.tensor([0, ctx.local_len]), cp_context=ctx)
    with pytest.raises(ValueError, match="not a padding mask"):
        layer(torch.randn(1, ctx.local_len, 32), attention_mask=torch.tensor([[0] + [1] * (ctx.local_len - 1)]),
              cp_context=ctx)  # fmt: skip
    return 0.0


def cases(cp: int, group) -> list[tuple[str, object]]:
    """``(name, thunk returning the worst relative error)`` of every case at this CP degree."""
    out = []
    for lname, layout in LAYOUTS.items():
        out += [(f"{name}/{lname}/cp{cp}", lambda n=name, lay=layout: op_case(n, lay, group)) for name in OPS]
        out += [(f"{name}/{lname}/cp{cp}", lambda n=name, lay=layout: own_signature_case(n, lay, group))
                for name in ("selective_scan", "hgrn", "linear_attn_norm", "gsa", "abc", "lightnet")]  # fmt: skip
        out.append((f"conv/{lname}/cp{cp}", lambda lay=layout: conv_case(lay, group)))
        out += [(f"{name}/{lname}/cp{cp}", lambda n=name, lay=layout: layer_case(n, lay, group)) for name in LAYERS]
        out += [
            (f"model_{name}/{lname}/cp{cp}", lambda n=name, lay=layout: model_case(n, lay, group)) for name in MODELS
        ]
    if DEVICE.type == "cpu":
        out.append((f"errors/cp{cp}", lambda: errors_case(group)))
        if cp == 2:
            out += [(f"bf16_{name}/packed/cp2", lambda n=name: bf16_layer_case(n, group)) for name in LAYERS]
    return out


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world in (2, 4), world
    if DEVICE.type == "cuda":
        torch.cuda.set_device(0)
    if world == 4:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        todo = cases(2, pairs[rank // 2]) + cases(4, dist.group.WORLD)
    else:
        todo = cases(2, dist.group.WORLD)
    only = re.compile(os.environ.get("CP_WORKER_ONLY", ""))  # a regex of the case names to run (default: all)
    results = {}
    for key, fn in [(k, f) for k, f in todo if only.search(k)]:
        try:
            # a NaN as inf: a MAX all-reduce may drop a NaN
            err = torch.tensor(fn(), dtype=torch.float64).nan_to_num(nan=float("inf"))
        except Exception:
            results[key] = {"error": f"rank {rank}: " + traceback.format_exc()[-1500:]}
            err = torch.tensor(float("inf"), dtype=torch.float64)
        dist.all_reduce(err, op=dist.ReduceOp.MAX)
        results.setdefault(key, err.item())
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
