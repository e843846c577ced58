"""The DPLR delta rule (chunk_dplr_delta_rule / fused_recurrent_dplr_delta_rule) and its RWKV7 wrappers against
the float64 token-by-token reference: outputs, final states and every gradient (q, k, v, a, b, gk, h0)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F

from fla.ops.common.layout import ChunkLayout
from fla.ops.generalized_delta_rule import (
    chunk_dplr_delta_rule,
    fused_recurrent_dplr_delta_rule,
    naive_chunk_dplr_delta_rule,
    naive_recurrent_dplr_delta_rule,
)
from fla.ops.rwkv7 import (
    chunk_rwkv7,
    fused_mul_recurrent_rwkv7,
    fused_recurrent_rwkv7,
    naive_chunk_rwkv7,
    naive_recurrent_rwkv7,
)
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, near_zero_or_one, to_reference, tol, using

NAMES = ("q", "k", "v", "a", "b", "gk")
OPS = [chunk_dplr_delta_rule, fused_recurrent_dplr_delta_rule]


def make_inputs(B, T, H, K, V, dtype, strength=0.6, num_states=None, device=DEVICE) -> dict[str, torch.Tensor]:
    """Random leaves (requiring grad) shaped as RWKV7 feeds the op: ``a = -kk``, ``b = kk * rate`` with ``kk`` unit
    keys and ``rate`` in (0, 1), log decays ``gk`` in ``(-strength, 0)``; ``h0 [num_states, H, K, V]`` fp32/fp64."""
    kk = F.normalize(torch.randn(B, T, H, K, device=device), dim=-1)
    out = {
        "q": torch.randn(B, T, H, K, device=device),
        "k": torch.randn(B, T, H, K, device=device) * K**-0.5,
        "v": torch.randn(B, T, H, V, device=device),
        "a": -kk,
        "b": kk * torch.rand(B, T, H, K, device=device),
        "gk": -strength * torch.rand(B, T, H, K, device=device),
    }
    out = {name: t.to(dtype) for name, t in out.items()}
    if num_states is not None:
        out["h0"] = torch.randn(num_states, H, K, V, device=device, dtype=torch.promote_types(dtype, torch.float32))
    return {name: t.requires_grad_() for name, t in out.items()}


def _call(op: Callable, inputs: Mapping[str, torch.Tensor], **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return op(*(inputs[n] for n in NAMES), initial_state=inputs.get("h0"), output_final_state=True, **kwargs)


def check_op(op: Callable, inputs: Mapping[str, torch.Tensor], backend: str, ratio: float, **kwargs) -> None:
    """``op`` (run with ``backend``) against the float64 recurrence: o, the final state, every gradient."""
    with using(backend):
        o, ht = _call(op, inputs, **kwargs)
    ref_inputs = {name: to_reference(t) for name, t in inputs.items()}
    ref_o, ref_ht = _call(naive_recurrent_dplr_delta_rule, ref_inputs, **kwargs)
    assert o.dtype == inputs["v"].dtype, f"o has dtype {o.dtype}, expected v's {inputs['v'].dtype}"
    assert ht.dtype == torch.promote_types(inputs["q"].dtype, torch.float32), f"final state dtype {ht.dtype}"
    assert_close("o", ref_o, o, ratio)
    assert_close("ht", ref_ht, ht, ratio)
    grad_outputs = (torch.randn_like(ref_o), torch.randn_like(ref_ht))
    assert_grads_close(inputs, ref_inputs, (o, ht), (ref_o, ref_ht), grad_outputs, ratio)


def check_varlen(op: Callable, inputs: Mapping[str, torch.Tensor], lengths: list[int], backend: str, ratio: float):
    """``op`` on a packed row with ``cu_seqlens`` == ``op`` on each sequence alone (outputs, states, gradients)."""
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu = torch.tensor(bounds, dtype=torch.int32, device=inputs["q"].device)
    loop_inputs = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    with using(backend):
        o, ht = _call(op, inputs, cu_seqlens=cu)
        outs, states = [], []
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            piece = {name: t[:, s:e] if name in NAMES else t[i : i + 1] for name, t in loop_inputs.items()}
            o_i, ht_i = _call(op, piece)
            outs.append(o_i)
            states.append(ht_i)
    ref_o, ref_ht = torch.cat(outs, 1), torch.cat(states, 0)
    assert_close("o (varlen vs loop)", ref_o, o, ratio)
    assert_close("ht (varlen vs loop)", ref_ht, ht, ratio)
    grad_outputs = (torch.randn_like(o), torch.randn_like(ht))
    assert_grads_close(inputs, loop_inputs, (o, ht), (ref_o, ref_ht), grad_outputs, ratio)


def test_recurrence_matches_a_plain_loop():
    # the reference itself, in fla 0.6.0's order: the low-rank term reads the state before the token's decay
    inputs = {n: t.detach().double() for n, t in make_inputs(1, 7, 1, 5, 3, torch.float64, num_states=1).items()}
    q, k, v, a, b, gk = (inputs[n][0, :, 0] for n in NAMES)
    S, outs = inputs["h0"][0, 0].clone(), []
    for t in range(7):
        S = torch.diag(gk[t].exp()) @ S + torch.outer(b[t], a[t] @ S) + torch.outer(k[t], v[t])
        outs.append(0.5 * S.T @ q[t])
    o, ht = _call(naive_recurrent_dplr_delta_rule, inputs, scale=0.5)
    assert_close("o", torch.stack(outs), o[0, :, 0], 1e-12)
    assert_close("ht", S, ht[0, 0], 1e-12)


@pytest.mark.parametrize("T", [63, 1])
def test_cpu_chunked_form_matches_recurrence_float64(T):
    # odd sizes: T not a multiple of the chunk, K and V not powers of two
    check_op(naive_chunk_dplr_delta_rule, make_inputs(2, T, 2, 36, 20, torch.float64, num_states=2), "torch", 1e-10)


def test_cpu_chunked_form_strong_decay_float64():
    # log decays down to -20 per token: chunk cumsums reach -300 (exp underflows), the pairwise differences the
    # chunked form exponentiates stay exact; the decayed state reaches subnormals (flushed to zero here)
    inputs = make_inputs(1, 40, 1, 12, 8, torch.float64, strength=20.0, num_states=1)
    torch.set_flush_denormal(True)
    try:
        check_op(naive_chunk_dplr_delta_rule, inputs, "torch", 1e-10)
    finally:
        torch.set_flush_denormal(False)


def test_long_sequence_strong_decay_extreme_rates():
    # T = 4096 on the CPU path: log decays down to -5 per channel and token (chunk spans up to 80) and the rank-one
    # rates b / kk within 1e-4 of 0 or 1, against the float64 recurrence (output, final state, every gradient):
    # nothing overflows or drifts over 256 chunks
    inputs = make_inputs(1, 4096, 2, 16, 8, torch.float32, strength=5.0, num_states=1)
    with torch.no_grad():
        inputs["b"].copy_(-inputs["a"] * near_zero_or_one(inputs["b"].shape[:-1], 1e-4)[..., None])
    check_op(chunk_dplr_delta_rule, inputs, "torch", tol(torch.float32, 10))  # measured <= 1.1e-6


@pytest.mark.parametrize("op", OPS)
def test_ops_cpu_float32(op):
    check_op(op, make_inputs(1, 100, 2, 20, 12, torch.float32, num_states=1), "torch", tol(torch.float32, 5))


@pytest.mark.parametrize(
    "op, dtype", [(chunk_dplr_delta_rule, torch.float32), (fused_recurrent_dplr_delta_rule, torch.float16)]
)
def test_triton_small(op, dtype):
    # the Triton kernels (forward, and the chunk backward both ops use) under the interpreter: three chunks of 16
    # (the last partial), odd head dims (K = 20: two channel blocks, the second partial), an initial state, every
    # gradient
    check_op(op, make_inputs(1, 37, 1, 20, 12, dtype, num_states=1), "triton", tol(dtype, 5))


def test_triton_without_initial_or_final_state():
    # the kernels' branches without h0 (USE_H0), ht (STORE_HT), dht (USE_DHT) and dh0 (STORE_DH0)
    inputs = make_inputs(2, 20, 1, 12, 8, torch.float32)
    with using("triton"):
        o = chunk_dplr_delta_rule(*(inputs[n] for n in NAMES))[0]
    ref_inputs = {name: to_reference(t) for name, t in inputs.items()}
    ref_o = naive_recurrent_dplr_delta_rule(*(ref_inputs[n] for n in NAMES))[0]
    assert_close("o", ref_o, o, tol(torch.float32, 5))
    assert_grads_close(inputs, ref_inputs, o, ref_o, torch.randn_like(ref_o), tol(torch.float32, 5))


def test_triton_wide_keys_fall_back_to_the_recomputed_backward():
    # K = 130 > 128: the Triton forward, the backward by the PyTorch chunked form on the same device
    check_op(chunk_dplr_delta_rule, make_inputs(1, 5, 1, 130, 8, torch.float32, num_states=1), "triton", 1e-4)


def test_triton_scores_by_dot_and_elementwise():
    # a chunk whose decays add up to at most 60 forms its scores (and their gradients) by tl.dot of rows scaled
    # from the chunk's start, a stronger one elementwise: chunk 0 at the edge (16 x 3.7 = 59.2: factors up to
    # e^59), chunk 1 past it (16 x 5 = 80), chunk 2 with RWKV7-like decays
    inputs = make_inputs(1, 48, 2, 20, 12, torch.float32, num_states=1)
    with torch.no_grad():
        inputs["gk"][:, :16] = -3.7
        inputs["gk"][:, 16:32] = -5.0
    check_op(chunk_dplr_delta_rule, inputs, "triton", tol(torch.float32, 5))


def test_triton_chunk_inverse_with_rates_near_one_and_similar_keys():
    # the chunk's (I - A_ab)^{-1} (unit_lower_inverse, block forward substitution) where its Neumann series cancels
    # most: in-chunk rates near 1 and keys within a small angle of each other, so A_ab's entries are near -1 and
    # its powers grow to ~C(15, 8) before they cancel; a product form of the series lost 4e-4 of Tm here, measured
    inputs = make_inputs(1, 32, 2, 32, 16, torch.float32, strength=0.02, num_states=1)
    with torch.no_grad():
        kk = F.normalize(torch.randn(1, 1, 2, 32) + 0.3 * torch.randn(1, 32, 2, 32), dim=-1)
        inputs["a"].copy_(-kk)
        inputs["b"].copy_(kk * (1 - 0.01 * torch.rand(1, 32, 2, 32)))
    check_op(chunk_dplr_delta_rule, inputs, "triton", tol(torch.float32, 5))


def test_triton_chunk_grid_over_batches_heads_and_value_blocks():
    # the chunk stages run one program per (chunk, batch row, head) and the walks one per (sequence, head, V block
    # of 32): two batch rows, three heads, T = 45 (three chunks), V = 72 (three V blocks of the walks, the last
    # partial; with K = 64 two of the backward's chunk pass, which holds [K, BV] state blocks with K * BV <= 4096);
    # then packed sequences over the same grid (chunk indices)
    check_op(chunk_dplr_delta_rule, make_inputs(2, 45, 3, 64, 72, torch.float32, num_states=2), "triton",
             tol(torch.float32, 5))  # fmt: skip
    inputs = make_inputs(1, 50, 2, 64, 72, torch.float32, num_states=4)
    check_varlen(chunk_dplr_delta_rule, inputs, [1, 33, 0, 16], "triton", tol(torch.float32, 5))


def test_triton_chunk_states_kept_in_bf16(monkeypatch):
    # bf16 inputs keep the backward's per-chunk states h and dh in bf16 (chunk_state_dtype); the interpreter's bf16
    # tl.dot is wrong, so float32 inputs here with the states stored in bf16: the kernels' casts on store and load,
    # within bf16 rounding of the states
    import fla.ops.generalized_delta_rule.dplr.chunk_bwd as chunk_bwd
    import fla.ops.generalized_delta_rule.dplr.chunk_fwd as chunk_fwd

    stored = []

    def bf16_states(dtype):
        stored.append(dtype)
        return torch.bfloat16

    monkeypatch.setattr(chunk_fwd, "chunk_state_dtype", bf16_states)
    monkeypatch.setattr(chunk_bwd, "chunk_state_dtype", bf16_states)
    assert chunk_fwd.chunk_state_dtype is bf16_states
    check_op(chunk_dplr_delta_rule, make_inputs(1, 40, 2, 32, 24, torch.float32, num_states=1), "triton",
             tol(torch.bfloat16, 2))  # fmt: skip
    assert len(stored) == 2  # hs (the backward's recomputed forward) and dhs


def test_triton_backward_stores_gradients_in_the_inputs_dtypes():
    # the backward sums dq, dk, da, db in float32 and stores each finished gradient in its input's dtype (no float32
    # copies cast afterwards): fp16 q, k, v, a, b with fp32 gk give fp16 / fp32 gradients, each the float32 run's
    # rounded once (the same kernel on float32 copies of the inputs). On a GPU the fp16 run's tl.dot take TF32
    # operands (dot_precision) where the float32 run's are exact, so there the runs differ by TF32's ~1e-3 (dgk:
    # 1.1e-3 on an H100; 7e-4 under the interpreter with operands rounded to TF32 as the GPU does)
    from fla.ops.generalized_delta_rule.dplr.chunk_bwd import chunk_dplr_bwd

    torch.manual_seed(3)
    inputs = {n: t.detach() for n, t in make_inputs(1, 37, 2, 20, 12, torch.float16).items()}
    inputs["gk"] = inputs["gk"].float()
    do = torch.randn_like(inputs["v"])
    args = (1.0, None, do, None, None, False)
    grads = chunk_dplr_bwd(*(inputs[n] for n in NAMES), *args)[:6]
    wide = chunk_dplr_bwd(*(inputs[n].float() for n in NAMES), 1.0, None, do.float(), None, None, False)[:6]
    for name, g, w in zip(("dq", "dk", "dv", "da", "db", "dgk"), grads, wide):
        source = {"dq": "q", "dk": "k", "dv": "v", "da": "a", "db": "b", "dgk": "gk"}[name]
        assert g.dtype == inputs[source].dtype, f"{name}: {g.dtype}, expected {inputs[source].dtype}"
        assert torch.isfinite(g).all(), name
        assert_close(name, w.double(), g, tol(g.dtype, 2) if DEVICE.type == "cpu" else tol(torch.float16, 2))


@pytest.mark.parametrize("varlen", [False, True])
def test_triton_disable_recompute_keeps_the_forward_for_the_backward(varlen, monkeypatch):
    # fla 0.6.0's disable_recompute=True: the forward keeps the per-chunk states and the chunk stages' products and
    # the backward reads them instead of running the forward's stages again; the same kernels on the same inputs, so
    # the same outputs and gradients bit for bit, and the chunk stages run once instead of twice
    import fla.ops.generalized_delta_rule.dplr.chunk_fwd as chunk_fwd

    torch.manual_seed(4)
    inputs = make_inputs(1, 45, 2, 20, 12, torch.float16, num_states=3 if varlen else 1)
    kwargs = {"cu_seqlens": torch.tensor([0, 1, 30, 45], dtype=torch.int32, device=DEVICE)} if varlen else {}
    prep_calls = []
    prep = chunk_fwd.chunk_dplr_prep
    monkeypatch.setattr(chunk_fwd, "chunk_dplr_prep", lambda *a, **k: prep_calls.append(1) or prep(*a, **k))
    results = []
    for keep in (False, True):
        leaves = {n: t.detach().clone().requires_grad_() for n, t in inputs.items()}
        prep_calls.clear()
        with using("triton"):
            o, ht = _call(chunk_dplr_delta_rule, leaves, disable_recompute=keep, **kwargs)
            (o.float().square().sum() + ht.square().sum()).backward()
        results.append(([o, ht], {n: t.grad for n, t in leaves.items()}, len(prep_calls)))
    (outs, grads, preps), (outs_kept, grads_kept, preps_kept) = results
    assert (preps, preps_kept) == (2, 1)
    for x, y in zip(outs, outs_kept):
        assert torch.equal(x, y)
    for name in grads:
        assert torch.equal(grads[name], grads_kept[name]), name


def test_triton_chunk_stage_products_in_bf16(monkeypatch):
    # bf16 inputs keep the chunk stages' products W, U0, Qh, O0, Kd, Bd in bf16 (the default); float32 inputs
    # here (the interpreter's bf16 tl.dot is wrong) with the products stored in bf16: the kernels' casts on store and
    # load, within bf16 rounding of the products
    import fla.ops.generalized_delta_rule.dplr.chunk_intra as chunk_intra

    monkeypatch.setattr(chunk_intra, "chunk_stage_dtype", lambda dtype: torch.bfloat16)
    inputs = make_inputs(1, 40, 2, 32, 24, torch.float32, num_states=1)
    stages = chunk_intra.chunk_dplr_prep(
        *(inputs[n].detach() for n in NAMES), 1.0, ChunkLayout.build(inputs["q"], None, chunk_intra.DPLR_CHUNK)
    )
    assert [t.dtype for t in stages] == [torch.bfloat16] * 6 + [torch.float32]  # EL, a decay, stays float32
    check_op(chunk_dplr_delta_rule, inputs, "triton", tol(torch.bfloat16, 2))


def test_walk_bf16_dots(monkeypatch):
    from fla.ops.generalized_delta_rule.dplr.chunk_fwd import walk_bf16_dots

    monkeypatch.delenv("FLA_DPLR_BF16_WALKS", raising=False)
    assert walk_bf16_dots(torch.bfloat16)  # on by default, for bf16 inputs only
    assert not walk_bf16_dots(torch.float16) and not walk_bf16_dots(torch.float32)
    monkeypatch.setenv("FLA_DPLR_BF16_WALKS", "0")
    assert not walk_bf16_dots(torch.bfloat16)
    monkeypatch.setenv("FLA_DPLR_BF16_WALKS", "yes")
    with pytest.raises(ValueError, match="FLA_DPLR_BF16_WALKS='yes': expected 0 or 1"):
        walk_bf16_dots(torch.bfloat16)


def test_chunk_stage_dtype(monkeypatch):
    from fla.ops.generalized_delta_rule.dplr.chunk_intra import chunk_stage_dtype

    monkeypatch.delenv("FLA_DPLR_BF16_STAGES", raising=False)
    assert chunk_stage_dtype(torch.bfloat16) == torch.bfloat16  # on by default, for bf16 inputs only
    assert chunk_stage_dtype(torch.float16) == chunk_stage_dtype(torch.float32) == torch.float32
    monkeypatch.setenv("FLA_DPLR_BF16_STAGES", "0")
    assert chunk_stage_dtype(torch.bfloat16) == torch.float32
    monkeypatch.setenv("FLA_DPLR_BF16_STAGES", "1")
    assert chunk_stage_dtype(torch.bfloat16) == torch.bfloat16
    monkeypatch.setenv("FLA_DPLR_BF16_STAGES", "true")
    with pytest.raises(ValueError, match="FLA_DPLR_BF16_STAGES='true': expected 0 or 1"):
        chunk_stage_dtype(torch.bfloat16)


def test_chunk_state_dtype():
    from fla.ops.generalized_delta_rule.dplr.chunk_fwd import chunk_state_dtype

    assert chunk_state_dtype(torch.bfloat16) == torch.bfloat16
    assert chunk_state_dtype(torch.float16) == chunk_state_dtype(torch.float32) == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_small(backend):
    # packed sequences with a length-1 and an empty one == each sequence alone; both ops
    lengths = [1, 17, 0, 5]  # two chunks, a partial one, a length-1 and an empty sequence
    for op in OPS:
        inputs = make_inputs(1, sum(lengths), 1, 12, 8, torch.float32, num_states=len(lengths))
        check_varlen(op, inputs, lengths, backend, tol(torch.float32, 5))


def test_rwkv7_wrappers_map_onto_the_dplr_op():
    # fla 0.6.0's argument order (r, w, k, v, a, b) and defaults: chunk_rwkv7 scale 1, fused_recurrent_rwkv7 scale
    # K ** -0.5 and a final state by default; fused_mul_recurrent_rwkv7 takes kk and the rate: a = -kk, b = kk * rate
    x = {n: t.detach() for n, t in make_inputs(1, 20, 2, 12, 8, torch.float64, num_states=1).items()}
    r, k, v, a, b, w, h0 = (x[n] for n in (*NAMES, "h0"))
    ref1, ref1_ht = naive_recurrent_dplr_delta_rule(r, k, v, a, b, w, 1.0, h0, True)
    o, ht = chunk_rwkv7(r, w, k, v, a, b, initial_state=h0, output_final_state=True)
    assert_close("chunk_rwkv7", ref1, o, 1e-10)
    assert_close("chunk_rwkv7 ht", ref1_ht, ht, 1e-10)
    assert_close("naive_chunk_rwkv7", ref1, naive_chunk_rwkv7(r, w, k, v, a, b, initial_state=h0)[0], 1e-10)
    assert_close("naive_recurrent_rwkv7", ref1, naive_recurrent_rwkv7(r, w, k, v, a, b, initial_state=h0)[0], 1e-10)
    ref2, ref2_ht = naive_recurrent_dplr_delta_rule(r, k, v, a, b, w, None, h0, True)
    o, ht = fused_recurrent_rwkv7(r, w, k, v, a, b, initial_state=h0)
    assert_close("fused_recurrent_rwkv7", ref2, o, 1e-10)
    assert_close("fused_recurrent_rwkv7 ht", ref2_ht, ht, 1e-10)
    kk, rate = -a, torch.rand_like(a)
    ref3, _ = naive_recurrent_dplr_delta_rule(r, k, v, -kk, kk * rate, w, 1.0, h0, True)
    o, ht = fused_mul_recurrent_rwkv7(r, w, k, v, kk, rate, initial_state=h0)
    assert_close("fused_mul_recurrent_rwkv7", ref3, o, 1e-10)
    assert ht is None


def test_errors_name_the_argument():
    x = {n: t.detach() for n, t in make_inputs(1, 8, 2, 12, 8, torch.float32).items()}
    args = [x[n] for n in NAMES]
    with pytest.raises(ValueError, match=r"^q has shape \[1, 8, 2\], expected 4 dims"):
        chunk_dplr_delta_rule(args[0][..., 0], *args[1:])
    for i, name in enumerate(NAMES):
        if name in ("q", "v"):  # q sets [B, T, H, K]
            continue
        bad = list(args)
        bad[i] = args[i][..., :5]
        with pytest.raises(ValueError, match=rf"^{name} has shape \[1, 8, 2, 5\]"):
            chunk_dplr_delta_rule(*bad)
    with pytest.raises(ValueError, match=r"^v has shape \[1, 8, 3, 8\]"):
        chunk_dplr_delta_rule(args[0], args[1], torch.zeros(1, 8, 3, 8), *args[3:])
    with pytest.raises(ValueError, match=r"^b has shape \[1, 8, 2\]"):  # RWKV7's names
        chunk_rwkv7(args[0], args[5], args[1], args[2], args[3], args[4][..., 0])
    with pytest.raises(ValueError, match=r"^w has shape"):
        fused_recurrent_rwkv7(args[0], args[5][:, :4], *args[1:5])
    with pytest.raises(ValueError, match=r"^kk has shape"):
        fused_mul_recurrent_rwkv7(args[0], args[5], args[1], args[2], args[3][..., :3], args[4])
    with pytest.raises(TypeError, match="b has dtype torch.int64"):
        chunk_dplr_delta_rule(*args[:4], args[4].long(), args[5])
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 2, 12, 8\]"):
        chunk_dplr_delta_rule(*args, initial_state=torch.zeros(2, 2, 12, 8))
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        chunk_dplr_delta_rule(*args, cu_seqlens=torch.tensor([0.0, 8.0]))
    for cu, message in (([0, 5, 3, 8], "increasing|non-decreasing"), ([0, 4, 6], "8")):
        with pytest.raises(ValueError, match=message):
            chunk_dplr_delta_rule(*args, cu_seqlens=torch.tensor(cu, dtype=torch.int32))
    with pytest.raises(ValueError, match="lower_bound must be negative"):
        chunk_rwkv7(args[0], args[5], *args[1:5], lower_bound=0.5)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['bogus'\]"):
        chunk_dplr_delta_rule(*args, bogus=1)
    with pytest.raises(ValueError, match="K=300 is larger than 256"):
        chunk_dplr_delta_rule(*(torch.zeros(1, 2, 1, 300 if n != "v" else 4) for n in NAMES))
    with pytest.raises(NotImplementedError, match="reverse=True"):
        fused_recurrent_dplr_delta_rule(*args, reverse=True)


GPU_SHAPES = [(2, 1000, 4, 64, 64), (1, 300, 2, 100, 60)]


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("B, T, H, K, V", GPU_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ops_gpu(op, B, T, H, K, V, dtype):
    check_op(op, make_inputs(B, T, H, K, V, dtype, num_states=B), "triton", tol(dtype, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, K, V", GPU_SHAPES)
def test_tf32_walks_gpu(monkeypatch, B, T, H, K, V):
    # FLA_DPLR_BF16_WALKS=0: the chunk walks multiply float32 operands (TF32) for bf16 inputs instead of bf16 ones
    monkeypatch.setenv("FLA_DPLR_BF16_WALKS", "0")
    check_op(chunk_dplr_delta_rule, make_inputs(B, T, H, K, V, torch.bfloat16, num_states=B), "triton",
             tol(torch.bfloat16, 4))  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_varlen_gpu(op):
    lengths = [1, 500, 0, 63, 64, 200]
    inputs = make_inputs(1, sum(lengths), 4, 64, 64, torch.float32, num_states=len(lengths))
    check_varlen(op, inputs, lengths, "triton", tol(torch.float32, 20))
