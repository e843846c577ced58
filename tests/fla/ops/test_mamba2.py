"""chunk_mamba2_ssd / fused_recurrent_mamba2_ssd / mamba2_ssd_step against the float64 step-by-step reference."""

from __future__ import annotations

import math

import pytest
import torch

from fla.ops.mamba2 import (
    chunk_mamba2_ssd,
    fused_recurrent_mamba2_ssd,
    mamba2_ssd_step,
    naive_chunk_mamba2_ssd,
    naive_recurrent_mamba2_ssd,
)
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, to_reference, tol, using

TOKEN_NAMES = ("x", "dt", "B", "C")
ORDER = ("x", "dt", "A_log", "B", "C", "D", "dt_bias")


def make_inputs(batch, T, H, G, N, P, dtype, D="head", num_states=None, device=DEVICE):
    """Random leaves (all requiring grad): x [B, T, H, P], dt [B, T, H], A_log [H], B/C [B, T, G, N], D, dt_bias
    [H] and h0 [S, H, N, P]; the time steps land around softplus(-2 +- 0.5) ~ 0.1, decays exp(A dt) in
    ~[0.2, 1)."""
    out = {
        "x": torch.randn(batch, T, H, P, device=device, dtype=dtype),
        "dt": (torch.randn(batch, T, H, device=device) * 0.5).to(dtype),
        "A_log": torch.empty(H, device=device).uniform_(1, 8).log(),
        "B": torch.randn(batch, T, G, N, device=device, dtype=dtype),
        "C": torch.randn(batch, T, G, N, device=device, dtype=dtype),
        "D": None if D is None else torch.randn(H, *([P] if D == "channel" else []), device=device),
        "dt_bias": torch.full((H,), -2.0, device=device) + torch.randn(H, device=device) * 0.1,
    }
    if num_states is not None:
        out["h0"] = torch.randn(num_states, H, N, P, device=device)
    return {k: None if v is None else v.requires_grad_() for k, v in out.items()}


def call(op, inputs, **kwargs):
    args = [inputs[name] for name in ORDER]
    return op(*args, initial_state=inputs.get("h0"), **kwargs)


def check(op, inputs, backend, ratio, grad_ratio=None, **kwargs):
    """``op`` (with ``backend``) vs the float64 recurrence: output, final state and every gradient."""
    kwargs = {"output_final_state": True, **kwargs}
    with using(backend):
        y, ht = call(op, inputs, **kwargs)
    refs = {name: to_reference(t) for name, t in inputs.items()}
    ref_y, ref_ht = call(naive_recurrent_mamba2_ssd, refs, **kwargs)
    state_dtype = torch.float64 if inputs["x"].dtype == torch.float64 else torch.float32
    assert y.dtype == inputs["x"].dtype and ht.dtype == state_dtype
    assert_close("y", ref_y, y, ratio)
    assert_close("ht", ref_ht, ht, ratio)
    grad_out = (torch.randn_like(ref_y), torch.randn_like(ref_ht))
    present = {k: v for k, v in inputs.items() if v is not None}
    assert_grads_close(present, {k: refs[k] for k in present}, (y, ht), (ref_y, ref_ht), grad_out, grad_ratio or ratio)


def test_chunked_cpu_form_matches_recurrence_float64():
    inputs = make_inputs(2, 100, 4, 2, 16, 20, torch.float64, D="channel", num_states=2)
    inputs = {k: v.detach().double().requires_grad_() for k, v in inputs.items() if v is not None}
    check(naive_chunk_mamba2_ssd, inputs, "torch", tol(torch.float64, 10))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype, T, H, G, D",
    [(torch.float32, 63, 4, 2, "head"), (torch.float16, 100, 2, 1, "channel"), (torch.float32, 1, 3, 3, None)],
)
def test_chunk(backend, dtype, T, H, G, D):
    inputs = make_inputs(2, T, H, G, 12, 20, dtype, D=D, num_states=2)
    check(chunk_mamba2_ssd, inputs, backend, tol(dtype, 2), tol(dtype, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_recurrent_varlen_with_dt_limit(backend):
    lengths = [1, 30, 12]
    cu = torch.tensor([0, 1, 31, 43], dtype=torch.int64, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 4, 2, 12, 20, torch.float32, num_states=3)
    # limits that clamp some steps on either side: their dt gets no gradient there, in both paths alike
    check(fused_recurrent_mamba2_ssd, inputs, backend, tol(torch.float32, 2), cu_seqlens=cu, dt_limit=(0.08, 0.2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunk_varlen_matches_each_sequence(backend):
    lengths = [1, 70, 1, 29]
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cu = torch.tensor(bounds, dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 4, 2, 12, 20, torch.float32, num_states=len(lengths))
    loop = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    with using(backend):
        y, ht = call(chunk_mamba2_ssd, inputs, output_final_state=True, cu_seqlens=cu)
        ys, hts = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            piece = {k: v[:, a:b] if k in TOKEN_NAMES else v[i : i + 1] if k == "h0" else v for k, v in loop.items()}
            y_i, ht_i = call(chunk_mamba2_ssd, piece, output_final_state=True)
            ys.append(y_i)
            hts.append(ht_i)
    ref_y, ref_ht = torch.cat(ys, 1), torch.cat(hts)
    ratio = tol(torch.float32, 2)
    assert_close("y (varlen vs loop)", ref_y, y, ratio)
    assert_close("ht (varlen vs loop)", ref_ht, ht, ratio)
    grad_out = (torch.randn_like(y), torch.randn_like(ht))
    assert_grads_close(inputs, loop, (y, ht), (ref_y, ref_ht), grad_out, ratio)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_continues_the_chunked_scan(backend):
    inputs = make_inputs(2, 9, 4, 2, 12, 20, torch.float32)
    with torch.no_grad(), using(backend):
        y_all, _ = call(chunk_mamba2_ssd, inputs)
        prefix = {k: v[:, :8] if k in TOKEN_NAMES else v for k, v in inputs.items()}
        _, state = call(chunk_mamba2_ssd, prefix, output_final_state=True)
        x, dt, A_log, B, C, D, dt_bias = (inputs[k] for k in ORDER)
        y_last, new_state = mamba2_ssd_step(x[:, 8], dt[:, 8], A_log, B[:, 8], C[:, 8], state, D, dt_bias)
        _, ref_state = call(chunk_mamba2_ssd, inputs, output_final_state=True)
    assert_close("y", y_all[:, 8], y_last, tol(torch.float32, 2))
    assert_close("state", ref_state, new_state, tol(torch.float32, 2))


def test_errors_name_the_argument():
    x, dt, A_log = torch.randn(2, 8, 4, 6), torch.randn(2, 8, 4), torch.randn(4)
    B, C = torch.randn(2, 8, 2, 5), torch.randn(2, 8, 2, 5)
    with pytest.raises(ValueError, match=r"dt has shape \[2, 8, 3\], expected \[2, 8, 4\]"):
        chunk_mamba2_ssd(x, dt[..., :3], A_log, B, C)
    with pytest.raises(ValueError, match=r"C has shape \[2, 8, 2, 4\], expected \[2, 8, 2, 5\]"):
        chunk_mamba2_ssd(x, dt, A_log, B, C[..., :4])
    with pytest.raises(ValueError, match="x has H=4 heads, which is not a multiple of the G=3 groups"):
        chunk_mamba2_ssd(x, dt, A_log, torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5))
    with pytest.raises(ValueError, match=r"D has shape \[6\], expected \[4\] or \[4, 6\]"):
        chunk_mamba2_ssd(x, dt, A_log, B, C, D=torch.randn(6))
    with pytest.raises(ValueError, match=r"dt_bias has shape \[2\], expected \[4\]"):
        fused_recurrent_mamba2_ssd(x, dt, A_log, B, C, dt_bias=torch.randn(2))
    with pytest.raises(ValueError, match=r"dt_limit=\(0.2, 0.1\) must be a \(low, high\) pair"):
        chunk_mamba2_ssd(x, dt, A_log, B, C, dt_limit=(0.2, 0.1))
    with pytest.raises(TypeError, match="B has dtype torch.float16 but x has dtype torch.float32"):
        chunk_mamba2_ssd(x, dt, A_log, B.half(), C)
    with pytest.raises(ValueError, match="batch size must be 1"):
        chunk_mamba2_ssd(x, dt, A_log, B, C, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    one = dict(x=x[:1], dt=dt[:1], A_log=A_log, B=B[:1], C=C[:1])
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        chunk_mamba2_ssd(**one, cu_seqlens=torch.tensor([0.0, 8.0]))
    with pytest.raises(ValueError, match="end at the token count 8"):
        chunk_mamba2_ssd(**one, cu_seqlens=torch.tensor([0, 7], dtype=torch.int32))
    with pytest.raises(ValueError, match="non-decreasing"):
        chunk_mamba2_ssd(**one, cu_seqlens=torch.tensor([0, 5, 3, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"initial_state has shape \[2, 4, 6, 5\], expected \[2, 4, 5, 6\]"):
        chunk_mamba2_ssd(x, dt, A_log, B, C, initial_state=torch.randn(2, 4, 6, 5))


def test_default_dt_limit_is_no_clamp():
    # softplus is positive: the default (0, inf) clamp must change nothing, gradients included
    inputs = make_inputs(1, 7, 2, 1, 4, 3, torch.float64, num_states=None)
    inputs = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    a, _ = call(naive_recurrent_mamba2_ssd, inputs)
    b, _ = call(naive_recurrent_mamba2_ssd, inputs, dt_limit=(0.0, math.inf))
    assert torch.equal(a, b)


GPU_CASES = [  # batch, T, H, G, N, P, dtype
    (4, 2048, 8, 1, 128, 64, torch.bfloat16),
    (2, 1000, 6, 2, 64, 100, torch.float32),
    (1, 4096, 16, 4, 128, 64, torch.float16),
]


@pytest.mark.gpu
@pytest.mark.parametrize("batch, T, H, G, N, P, dtype", GPU_CASES)
def test_chunk_gpu(batch, T, H, G, N, P, dtype):
    # reference: the chunked PyTorch form in float64 on the GPU (itself tested against the recurrence above)
    inputs = make_inputs(batch, T, H, G, N, P, dtype, num_states=batch)
    with using("triton"):
        y, ht = call(chunk_mamba2_ssd, inputs, output_final_state=True)
    refs = {k: to_reference(v) for k, v in inputs.items()}
    ref_y, ref_ht = call(naive_chunk_mamba2_ssd, refs, output_final_state=True)
    ratio = tol(dtype, 4)
    assert_close("y", ref_y, y, ratio)
    assert_close("ht", ref_ht, ht, ratio)
    grad_out = (torch.randn_like(ref_y), torch.randn_like(ref_ht))
    assert_grads_close(inputs, refs, (y, ht), (ref_y, ref_ht), grad_out, ratio)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_chunk_varlen_gpu(dtype):
    # packed sequences (length 1 included) against the float64 chunked form of the same packed batch
    lengths = [1, 3000, 17, 64, 1000]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = make_inputs(1, sum(lengths), 8, 2, 128, 64, dtype, num_states=len(lengths))
    with using("triton"):
        y, ht = call(chunk_mamba2_ssd, inputs, output_final_state=True, cu_seqlens=cu)
    refs = {k: to_reference(v) for k, v in inputs.items()}
    ref_y, ref_ht = call(naive_chunk_mamba2_ssd, refs, output_final_state=True, cu_seqlens=cu)
    assert_close("y", ref_y, y, tol(dtype, 4))
    assert_close("ht", ref_ht, ht, tol(dtype, 4))
    grad_out = (torch.randn_like(ref_y), torch.randn_like(ref_ht))
    assert_grads_close(inputs, refs, (y, ht), (ref_y, ref_ht), grad_out, tol(dtype, 4))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunk_dt_limit_without_bias(backend, dtype):
    # no dt_bias, raw steps on both sides of softplus' linear threshold (20) and far below 0, limits that clamp
    # on either side (clamped steps get no gradient), per-channel D, no initial state; T spans two input-stage
    # programs of 64 tokens
    inputs = make_inputs(2, 97, 4, 2, 12, 20, dtype, D="channel")
    inputs["dt_bias"] = None
    raw = torch.randn(2, 97, 4, device=DEVICE) * 0.5 - 2
    raw[0, :5, 0] = torch.tensor([25.0, 21.0, -18.0, -30.0, 19.0])
    inputs["dt"] = raw.to(dtype).requires_grad_()
    check(chunk_mamba2_ssd, inputs, backend, tol(dtype, 2), tol(dtype, 5), dt_limit=(0.08, 22.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("D_shape", ["head", "channel"])
def test_fused_input_and_skip_stages(dtype, D_shape):
    """The Triton input stage (``v = x dt``, ``g = A dt`` with ``dt = clamp(softplus(dt_raw + dt_bias))``) and skip
    (``y + D x``) of ssd_io vs float64, every gradient; odd P, a token count that is not a multiple of the rows per
    program."""
    from fla.ops.mamba2.inputs import discretize
    from fla.ops.mamba2.ssd_io import ssd_inputs_triton, ssd_skip_triton

    B, T, H, P = 2, 37, 3, 20
    x = torch.randn(B, T, H, P, device=DEVICE, dtype=dtype, requires_grad=True)
    y = torch.randn(B, T, H, P, device=DEVICE, dtype=dtype, requires_grad=True)
    dt = (torch.randn(B, T, H, device=DEVICE) * 2).requires_grad_()
    A_log = torch.randn(H, device=DEVICE, requires_grad=True)
    dt_bias = torch.randn(H, device=DEVICE, requires_grad=True)
    D = torch.randn(*((H,) if D_shape == "head" else (H, P)), device=DEVICE, requires_grad=True)
    inputs = {"x": x, "y": y, "dt": dt, "A_log": A_log, "dt_bias": dt_bias, "D": D}
    ref = {k: to_reference(v) for k, v in inputs.items()}
    limit = (0.05, 3.0)
    with using("triton"):
        v, g = ssd_inputs_triton(x, dt, A_log, dt_bias, limit)
        o = ssd_skip_triton(y, x, D)
    assert v.dtype == o.dtype == dtype and g.dtype == torch.float32
    step, g_ref = discretize(ref["dt"], ref["A_log"], ref["dt_bias"], limit)
    Dr = ref["D"][:, None] if D_shape == "head" else ref["D"]
    v_ref, o_ref = ref["x"] * step[..., None], ref["y"] + Dr * ref["x"]
    assert_close("v", v_ref, v, tol(dtype))
    assert_close("g", g_ref, g, tol(torch.float32))
    outs, refs = (v, g, o), (v_ref, g_ref, o_ref)
    assert_grads_close(inputs, ref, outs, refs, tuple(torch.randn_like(t) for t in refs), tol(dtype))
