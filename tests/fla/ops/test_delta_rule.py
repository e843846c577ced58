"""chunk_delta_rule / fused_recurrent_delta_rule against the float64 recurrent reference.

The helpers here (:func:`make_delta_inputs`, :func:`check_delta`, :func:`check_delta_varlen`) are
shared with ``test_gated_delta_rule.py``: an op and its reference take ``q, k, v, [g], beta``
positionally and the rest by keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F

from fla.ops.common.chunk_torch import _chunks, wy_representation
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.inputs import l2norm
from fla.ops.common.l2norm import l2norm_triton
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import CHUNK_SIZE
from fla.ops.common.wy import chunk_delta_solve, chunk_delta_wy_fwd
from fla.ops.delta_rule import (
    chunk_delta_rule,
    fused_recurrent_delta_rule,
    naive_chunk_delta_rule,
    naive_recurrent_delta_rule,
)
from fla.ops.utils.varlen import pad_sequences, unpad_sequences
from tests.fla.ops.gated import default_ratios
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using

POSITIONAL = ("q", "k", "v", "g", "beta")
TOKEN_NAMES = POSITIONAL


def make_delta_inputs(
    B: int,
    T: int,
    H: int,
    K: int,
    V: int,
    dtype: torch.dtype,
    gated: bool = False,
    strength: float = 1.0,
    num_states: int | None = None,
    unit_keys: bool = True,
    device: torch.device = DEVICE,
) -> dict[str, torch.Tensor]:
    """Random leaf tensors (requiring grad): q, k, v, beta in (0, 1), g (``gated``) and h0.

    ``unit_keys`` L2-normalizes k (the delta rule is only stable for ``beta |k|^2 <= 2``; tests
    that normalize inside the op pass raw keys); ``strength`` scales the log gates; ``num_states``
    adds ``h0 [N, H, K, V]`` (float32, float64 for float64 inputs).
    """
    k = torch.randn(B, T, H, K, device=device)
    out = {
        "q": torch.randn(B, T, H, K, device=device),
        "k": l2norm(k) if unit_keys else k,
        "v": torch.randn(B, T, H, V, device=device),
    }
    if gated:
        out["g"] = F.logsigmoid(torch.randn(B, T, H, device=device)) * strength
    out["beta"] = torch.rand(B, T, H, device=device).sigmoid()
    out = {name: t.to(dtype) for name, t in out.items()}
    if num_states is not None:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        out["h0"] = torch.randn(num_states, H, K, V, device=device, dtype=state_dtype)
    return {name: t.requires_grad_() for name, t in out.items()}


def _call(op: Callable, inputs: Mapping[str, torch.Tensor], kwargs: Mapping) -> tuple[torch.Tensor, tuple]:
    """``op(q, k, v, [g], beta, initial_state=h0, **kwargs)`` -> ``(o, (final state,) or ())``."""
    args = [inputs[name] for name in POSITIONAL if name in inputs]
    o, ht = op(*args, initial_state=inputs.get("h0"), **kwargs)
    return o, () if ht is None else (ht,)


def check_delta(
    op: Callable,
    reference: Callable,
    inputs: Mapping[str, torch.Tensor],
    backend: str,
    ratio: float | Mapping[str, float],
    **kwargs,
) -> None:
    """Compare ``op`` (run with ``backend``) with ``reference`` (float64 copies): o, the final state
    and the gradients of every input (the final state's gradient flowing back too)."""
    kwargs = {"output_final_state": True, **kwargs}
    bound = (lambda name: ratio.get(name, ratio["q"])) if isinstance(ratio, Mapping) else (lambda name: ratio)
    with using(backend):
        o, ht = _call(op, inputs, kwargs)
    ref_inputs = {name: to_reference(t) for name, t in inputs.items()}
    ref_o, ref_ht = _call(reference, ref_inputs, kwargs)
    assert o.dtype == inputs["v"].dtype, f"o has dtype {o.dtype}, expected v's {inputs['v'].dtype}"
    assert len(ht) == len(ref_ht), f"{len(ht)} final states, reference has {len(ref_ht)}"
    assert_close("o", ref_o, o, bound("o"))
    state_dtype = torch.float64 if inputs["q"].dtype == torch.float64 else torch.float32
    for s, ref_s in zip(ht, ref_ht):
        assert s.dtype == state_dtype, f"final state has dtype {s.dtype}, expected {state_dtype}"
        assert_close("ht", ref_s, s, bound("ht"))
    grad_outputs = tuple(torch.randn_like(t) for t in (ref_o, *ref_ht))
    ratios = {name: bound(name) for name in inputs}
    assert_grads_close(inputs, ref_inputs, (o, *ht), (ref_o, *ref_ht), grad_outputs, ratios)


def check_delta_varlen(
    op: Callable, inputs: Mapping[str, torch.Tensor], lengths: list[int], backend: str, ratio: float, **kwargs
) -> None:
    """``op`` on a packed row with ``cu_seqlens`` == ``op`` on each sequence alone (outputs, final
    states, every gradient)."""
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu = torch.tensor(bounds, dtype=torch.int32, device=inputs["q"].device)
    loop_inputs = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    with using(backend):
        o, ht = _call(op, inputs, {"output_final_state": True, "cu_seqlens": cu, **kwargs})
        outs, states = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            piece = {name: t[:, a:b] if name in TOKEN_NAMES else t[i : i + 1] for name, t in loop_inputs.items()}
            o_i, ht_i = _call(op, piece, {"output_final_state": True, **kwargs})
            outs.append(o_i)
            states.append(ht_i[0])
    ref_o, ref_ht = torch.cat(outs, 1), torch.cat(states, 0)
    assert_close("o (varlen vs loop)", ref_o, o, ratio)
    assert_close("ht (varlen vs loop)", ref_ht, ht[0], ratio)
    grad_outputs = (torch.randn_like(o), torch.randn_like(ht[0]))
    assert_grads_close(inputs, loop_inputs, (o, *ht), (ref_o, ref_ht), grad_outputs, ratio)


def gpu_ratios(dtype: torch.dtype) -> dict[str, float]:
    """Bounds at real sizes: the forward keeps w, u, h and v_new in the input dtype (as fla does)."""
    return {**default_ratios(dtype, 2, 2), "o": tol(dtype, 2), "ht": tol(dtype, 2)}


OPTIONS = {  # name -> (unit keys given?, op kwargs)
    "unit_keys": (True, {}),
    "l2norm": (False, {"use_qk_l2norm_in_kernel": True}),
    "neg_eigval": (True, {"allow_neg_eigval": True}),
    "both": (False, {"use_qk_l2norm_in_kernel": True, "allow_neg_eigval": True}),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("T", [100, 1])
def test_cpu_chunked_form_matches_recurrence_float64(option, T):
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_delta_inputs(2, T, 2, 36, 20, torch.float64, num_states=2, unit_keys=unit_keys)
    check_delta(naive_chunk_delta_rule, naive_recurrent_delta_rule, inputs, "torch", tol(torch.float64), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_delta_rule, fused_recurrent_delta_rule])
@pytest.mark.parametrize("dtype, T, option", [(torch.float32, 63, "l2norm"), (torch.float16, 100, "neg_eigval")])
def test_ops(backend, op, dtype, T, option):
    unit_keys, kwargs = OPTIONS[option]
    inputs = make_delta_inputs(1, T, 2, 60, 36, dtype, num_states=1, unit_keys=unit_keys)
    check_delta(op, naive_recurrent_delta_rule, inputs, backend, default_ratios(dtype, 2), scale=0.3, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [chunk_delta_rule, fused_recurrent_delta_rule])
def test_varlen(backend, op):
    lengths = [1, 70, 0, 29]
    inputs = make_delta_inputs(1, sum(lengths), 2, 40, 24, torch.float32, num_states=len(lengths), unit_keys=False)
    check_delta_varlen(op, inputs, lengths, backend, tol(torch.float32, 2), use_qk_l2norm_in_kernel=True)


def test_default_beta_is_one_and_no_state():
    inputs = make_delta_inputs(1, 20, 1, 16, 8, torch.float64)
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    o, ht = chunk_delta_rule(q, k, v)
    assert ht is None
    ref, _ = naive_recurrent_delta_rule(q, k, v, torch.ones(1, 20, 1, dtype=torch.float64))
    assert_close("o", ref, o, tol(torch.float64))


def test_errors_name_the_argument():
    q, k, v, beta = torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 16), torch.randn(2, 8, 2, 8), torch.rand(2, 8, 2)
    with pytest.raises(ValueError, match=r"beta has shape \[2, 8, 3\], expected \[2, 8, 2\]"):
        chunk_delta_rule(q, k, v, torch.rand(2, 8, 3))
    with pytest.raises(ValueError, match=r"k has shape \[2, 8, 2, 15\]"):
        fused_recurrent_delta_rule(q, k[..., :15], v, beta)
    with pytest.raises(ValueError, match=r"v has shape \[2, 7, 2, 8\]"):
        chunk_delta_rule(q, k, v[:, :7], beta)
    with pytest.raises(ValueError, match=r"initial_state has shape \[1, 2, 16, 8\], expected \[2, 2, 16, 8\]"):
        chunk_delta_rule(q, k, v, beta, initial_state=torch.randn(1, 2, 16, 8))
    with pytest.raises(TypeError, match="beta has dtype torch.int64"):
        chunk_delta_rule(q, k, v, beta.long())
    with pytest.raises(ValueError, match="batch size must be 1"):
        fused_recurrent_delta_rule(q, k, v, beta, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))


@pytest.mark.parametrize("op", [chunk_delta_rule, fused_recurrent_delta_rule])
def test_triton_without_states(op):
    # no initial state, no final state (the backward without dht / dh0); three chunks
    inputs = make_delta_inputs(1, 130, 2, 32, 20, torch.float32)
    check_delta(
        op, naive_recurrent_delta_rule, inputs, "triton", default_ratios(torch.float32, 2), output_final_state=False
    )


@pytest.mark.parametrize("dtype, D", [(torch.float32, 60), (torch.float16, 100), (torch.float32, 130)])
def test_l2norm_kernel(dtype, D):
    x = torch.randn(3, 37, 2, D, device=DEVICE).to(dtype).requires_grad_()
    ref_x = to_reference(x)
    with using("triton"):
        y = l2norm_triton(x)
    ref_y = l2norm(ref_x)
    assert y.dtype == dtype
    assert_close("y", ref_y, y, tol(dtype))
    assert_grads_close({"x": x}, {"x": ref_x}, y, ref_y, torch.randn_like(ref_y), tol(dtype, 2))


GPU_SHAPES = [  # B, T, H, D, dtype of the real-size tests
    (4, 2048, 8, 128, torch.bfloat16),
    (2, 1000, 4, 100, torch.float32),
    (1, 8192, 4, 64, torch.bfloat16),
    (8, 1024, 32, 64, torch.bfloat16),
    (2, 2048, 4, 256, torch.bfloat16),
    (2, 4096, 16, 128, torch.float16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("B, T, H, D, dtype", GPU_SHAPES)
def test_chunk_gpu(B, T, H, D, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence)
    inputs = make_delta_inputs(B, T, H, D, D, dtype, num_states=B, unit_keys=False)
    check_delta(
        chunk_delta_rule, naive_chunk_delta_rule, inputs, "triton", gpu_ratios(dtype),
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_varlen_gpu(dtype):
    lengths = [1, 3000, 17, 64, 1000, 65]
    inputs = make_delta_inputs(1, sum(lengths), 4, 128, 128, dtype, num_states=len(lengths), unit_keys=False)
    check_delta_varlen(chunk_delta_rule, inputs, lengths, "triton", tol(dtype, 2), use_qk_l2norm_in_kernel=True)


def _reference_wy(k, v, beta, g, cu_seqlens, bt=64):
    """W, U of :func:`wy_representation` in float64, laid out like the tokens ``[1 or B, T, H, *]``."""
    if cu_seqlens is not None:
        pad = lambda x: None if x is None else pad_sequences(x, cu_seqlens)
        W, U = _reference_wy(pad(k), pad(v), pad(beta), pad(g), None, bt)
        return unpad_sequences(W, cu_seqlens), unpad_sequences(U, cu_seqlens)
    B, T, H = k.shape[:3]
    nt = -(-T // bt)
    chunks = [None if x is None else _chunks(F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)), bt, torch.float64)
              for x in (k, v, beta, g)]  # fmt: skip
    return tuple(X.reshape(B, H, nt * bt, -1)[:, :, :T].movedim(1, 2) for X in wy_representation(*chunks))


@pytest.mark.parametrize(
    "dtype, T, K, gated, lengths",
    [
        (torch.float32, 100, 100, True, None),
        (torch.float32, 63, 60, False, None),
        (torch.float16, 70, 60, True, None),
        (torch.float32, 100, 36, True, [1, 70, 0, 29]),
    ],
)
def test_wy_stage_kernel(dtype, T, K, gated, lengths):
    # the Triton WY stage (interpreter on CPU) against the PyTorch triangular solve
    B = 2 if lengths is None else 1
    inputs = make_delta_inputs(B, T, 2, K, 36, dtype, gated=gated, strength=0.1)  # mild decays: long-range terms count
    k, v, beta, g = (inputs.get(n) for n in ("k", "v", "beta", "g"))
    cu = None if lengths is None else torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    layout = ChunkLayout.build(k, cu, CHUNK_SIZE)
    with torch.no_grad():
        G = None if g is None else chunk_local_cumsum(g, layout)
        _, w, u = chunk_delta_wy_fwd(k, v, beta, layout, g=G)
        ref_w, ref_u = _reference_wy(k, v, beta, g, cu)
    assert w.dtype == k.dtype and u.dtype == v.dtype
    assert_close("w", ref_w, w, tol(dtype, 2))
    assert_close("u", ref_u, u, tol(dtype, 2))


@pytest.mark.parametrize("lengths", [None, [1, 100, 64, 5]])
def test_blocked_solve_inverts_repeated_keys(lengths):
    # the blocked solve on a hard case: keys drawn from 3 unit vectors (repeated tokens give k_i.k_j = 1),
    # beta in (0.5, 1), no decay: (I + A) Tm == I for every chunk, A built in float64 from the inputs
    T = 170 if lengths is None else sum(lengths)
    B = 2 if lengths is None else 1
    basis = F.normalize(torch.randn(3, 32, dtype=torch.float64), dim=-1)
    k = basis[torch.randint(0, 3, (B, T, 1))].float()  # [B, T, 1, 32]
    beta = 0.5 + 0.5 * torch.rand(B, T, 1)
    cu = None if lengths is None else torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    layout = ChunkLayout.build(k, cu, CHUNK_SIZE)
    Tm = chunk_delta_solve(k, beta, layout).double()  # [B, T, 1, BT]
    bounds = [0, T] if cu is None else cu.tolist()
    for b in range(B):
        for start, end in zip(bounds[:-1], bounds[1:]):
            for c0 in range(start, end, CHUNK_SIZE):
                c1 = min(c0 + CHUNK_SIZE, end)
                kc, bc = k[b, c0:c1, 0].double(), beta[b, c0:c1, 0].double()
                A = torch.tril(bc[:, None] * (kc @ kc.T), -1)
                tm = Tm[b, c0:c1, 0, : c1 - c0]
                eye = torch.eye(c1 - c0, dtype=torch.float64)
                assert_close(f"(I + A) Tm, chunk at {c0}", eye, (eye + A) @ tm, 1e-5)
                assert torch.all(Tm[b, c0:c1, 0, c1 - c0 :] == 0), "columns past the chunk's end must be 0"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_wy_stage_kernel_gpu(dtype):
    for lengths, B in ((None, 2), ([1, 3000, 17, 64, 1000], 1)):
        T = 4096 if lengths is None else sum(lengths)
        inputs = make_delta_inputs(B, T, 4, 128, 128, dtype, gated=True, strength=1 / 16, device=DEVICE)
        k, v, beta, g = (inputs[n].detach() for n in ("k", "v", "beta", "g"))
        cu = None if lengths is None else torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=DEVICE)
        layout = ChunkLayout.build(k, cu, CHUNK_SIZE)
        _, w, u = chunk_delta_wy_fwd(k, v, beta, layout, g=chunk_local_cumsum(g, layout))
        ref_w, ref_u = _reference_wy(k, v, beta, g, cu)
        assert_close("w", ref_w, w, tol(dtype, 2))
        assert_close("u", ref_u, u, tol(dtype, 2))
