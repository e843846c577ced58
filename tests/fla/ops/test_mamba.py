"""The selective scan (fla.ops.mamba) against a float64 step-by-step reference, on both backends."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fla.ops.mamba import (
    chunk_selective_scan,
    fused_recurrent_selective_scan,
    naive_selective_scan,
    scan,
    selective_scan_fn,
    selective_state_update,
)
from fla.ops.mamba.chunk import scan_passes
from fla.ops.mamba.scan_sequential import sequential_selective_scan_bwd, sequential_selective_scan_fwd
from tests.harness import BACKENDS, DEVICE, assert_close, assert_grads_close, child_pythonpath, to_reference, tol, using

OPS = (chunk_selective_scan, fused_recurrent_selective_scan)


def _use_scan_path(request, monkeypatch) -> str:
    monkeypatch.setenv("FLA_MAMBA_SCAN", request.param)
    return request.param


@pytest.fixture(params=["chunk", "sequential"])
def scan_path(request, monkeypatch):
    """Both Triton paths of the chunk op: the chunk-parallel stages and the one-pass kernels
    (:mod:`fla.ops.mamba.scan_sequential`), whichever the sizes would pick."""
    return _use_scan_path(request, monkeypatch)


@pytest.fixture(params=["chunk", pytest.param("sequential", marks=pytest.mark.slow)])
def scan_path_slow_one_pass(request, monkeypatch):
    """:func:`scan_path` with the one pass among the slow tests: cases whose kernel variants the default run
    already covers on that path (interpreter time)."""
    return _use_scan_path(request, monkeypatch)


def _loop_reference(x, dt, A, B, C, D, z, dt_bias, h0, cu_seqlens):
    """Written out in float64 from the README formulas, sequence by sequence, channel by channel."""
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    bounds = [0, x.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    y = torch.empty(x.shape, dtype=torch.float64)
    states = []
    for b in range(x.shape[0]):
        for i, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
            n = b if cu_seqlens is None else i
            h = torch.zeros(A.shape, dtype=torch.float64) if h0 is None else h0[n].double().clone()
            for t in range(bos, eos):
                step = F.softplus(dt[b, t] + dt_bias.double())
                for d in range(A.shape[0]):
                    h[d] = torch.exp(step[d] * A[d]) * h[d] + step[d] * B[b, t] * x[b, t, d]
                    y[b, t, d] = (C[b, t] * h[d]).sum() + D[d].double() * x[b, t, d]
            y[b, bos:eos] *= F.silu(z[b, bos:eos].double())
            states.append(h)
    return y, torch.stack(states)


def _inputs(Bsz, T, Di, Ds, dtype, num_states=None, gate=True):
    """Random inputs (A in [-2.1, -0.1], as -exp(A_log) of Mamba's S4D-real init spans) as a dict of leaves."""
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    inputs = dict(
        x=torch.randn(Bsz, T, Di, dtype=dtype),
        dt=torch.randn(Bsz, T, Di, dtype=dtype) * 0.5,
        A=-(torch.rand(Di, Ds, dtype=state_dtype) * 2 + 0.1),
        B=torch.randn(Bsz, T, Ds, dtype=dtype),
        C=torch.randn(Bsz, T, Ds, dtype=dtype),
        D=torch.randn(Di, dtype=state_dtype) if gate else None,
        z=torch.randn(Bsz, T, Di, dtype=dtype) if gate else None,
        dt_bias=torch.randn(Di, dtype=state_dtype) * 0.1 if gate else None,
        initial_state=None if num_states is None else torch.randn(num_states, Di, Ds, dtype=state_dtype),
    )
    return {k: (v.to(DEVICE) if v is not None else None) for k, v in inputs.items()}


def _check(op, backend, inputs, ratio, cu_seqlens=None, grad_ratio=None, softplus=True):
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v is not None}
    refs = {k: to_reference(v) for k, v in leaves.items()}
    with using(backend):
        y, ht = op(**leaves, dt_softplus=softplus, output_final_state=True, cu_seqlens=cu_seqlens)
    ref_y, ref_ht = naive_selective_scan(**refs, dt_softplus=softplus, output_final_state=True, cu_seqlens=cu_seqlens)
    x = inputs["x"]
    assert y.dtype == x.dtype and ht.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    assert_close("y", ref_y, y, ratio)
    assert_close("ht", ref_ht, ht, ratio)
    dy, dht = torch.randn_like(ref_y), torch.randn_like(ref_ht)
    assert_grads_close(leaves, refs, (y, ht), (ref_y, ref_ht), (dy, dht), grad_ratio or ratio)


def test_naive_matches_written_out_loop():
    cu = torch.tensor([0, 1, 9, 10, 17], dtype=torch.int32)
    inputs = _inputs(1, 17, 5, 3, torch.float64, num_states=4)
    y, ht = naive_selective_scan(**inputs, dt_softplus=True, output_final_state=True, cu_seqlens=cu)
    ref_y, ref_ht = _loop_reference(*(inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias")),
                                    inputs["initial_state"], cu)  # fmt: skip
    assert_close("y", ref_y, y, tol(torch.float64))
    assert_close("ht", ref_ht, ht, tol(torch.float64))


@pytest.mark.parametrize("T, Di, Ds", [(1, 6, 3), (63, 10, 16), (100, 7, 64)])
def test_torch_path_float64(T, Di, Ds):
    # both ops run the same PyTorch path on CPU / for float64
    _check(chunk_selective_scan, "torch", _inputs(2, T, Di, Ds, torch.float64, num_states=2), tol(torch.float64))


@pytest.mark.parametrize("T, Di, Ds", [(63, 6, 3)])
def test_triton_float32(T, Di, Ds, scan_path):
    _check(chunk_selective_scan, "triton", _inputs(2, T, Di, Ds, torch.float32, num_states=2), tol(torch.float32, 2))


def test_triton_float16(scan_path_slow_one_pass):
    _check(chunk_selective_scan, "triton", _inputs(2, 33, 3, 4, torch.float16, num_states=2), tol(torch.float16, 2))


def test_triton_no_gate_no_initial_state(scan_path):
    inputs = _inputs(1, 70, 3, 2, torch.float32, gate=False)
    _check(chunk_selective_scan, "triton", inputs, tol(torch.float32, 2))


def test_triton_strong_decays(scan_path):
    """Decay factors down to exp(-60) per token: their in-chunk products underflow to 0 (as exp of the summed
    log decays does) and the states and gradients stay finite and exact."""
    inputs = _inputs(2, 70, 4, 5, torch.float32, num_states=2)
    inputs["A"] = inputs["A"] * 15  # A down to -31.5
    inputs["dt"] = inputs["dt"] + 1.0  # softplus(dt) up to ~2.5
    _check(chunk_selective_scan, "triton", inputs, tol(torch.float32, 2))


def test_triton_channel_blocks(monkeypatch, scan_path):
    """Several channel blocks with a ragged last one (Di = 20 in blocks of 16), Ds = 16, two batch rows, every
    gradient: the per-block dB / dC partials and the per-chunk dA / dD / d dt_bias ones add up."""
    monkeypatch.setattr(scan, "FWD_CHANNELS", 16)
    monkeypatch.setattr(scan, "BWD_CHANNELS", 16)
    _check(chunk_selective_scan, "triton", _inputs(2, 20, 20, 16, torch.float32, num_states=2), tol(torch.float32, 2))


@pytest.mark.parametrize("terms", ["D", "z+bias"])
def test_triton_optional_terms(terms, scan_path):
    """Each optional term alone (the kernels' HAS_D / HAS_Z / HAS_BIAS variants), d_state = 5 (not a power of two);
    without softplus (then dt > 0 as given)."""
    inputs = _inputs(2, 40, 6, 5, torch.float32, num_states=2)
    if terms == "D":
        inputs.update(z=None, dt_bias=None, dt=inputs["dt"].abs())
    else:
        inputs.update(D=None)
    _check(chunk_selective_scan, "triton", inputs, tol(torch.float32, 2), softplus=terms != "D")


def test_triton_small_steps(scan_path_slow_one_pass):
    """Small steps, softplus(dt + dt_bias) ~ 1e-6 .. 3e-5: the fused softplus keeps float32 accuracy there
    (``log(1 + exp(v))`` with ``1 + exp(v)`` rounded to float32 is off by up to a few percent)."""
    inputs = _inputs(1, 40, 5, 4, torch.float32, num_states=1)
    inputs.update(D=None, dt_bias=torch.linspace(-13.0, -11.0, 5, device=DEVICE))
    _check(chunk_selective_scan, "triton", inputs, tol(torch.float32, 2))


def test_scan_path_choice(monkeypatch):
    """``auto``: one pass when sequences x 32-channel blocks fill the GPU, else the chunk-parallel stages;
    ``FLA_MAMBA_SCAN`` forces either; another value is a ValueError naming it."""
    wide, narrow = scan.layout_for(torch.empty(8, 4, 1536), None), scan.layout_for(torch.empty(2, 4, 1536), None)
    monkeypatch.setenv("FLA_MAMBA_SCAN", "auto")
    assert scan_passes(wide, 1536)[0] is sequential_selective_scan_fwd  # 8 x 48 = 384 programs
    assert scan_passes(narrow, 1536)[0] is scan.chunk_selective_scan_fwd  # 2 x 48 = 96
    monkeypatch.setenv("FLA_MAMBA_SCAN", "chunk")
    assert scan_passes(wide, 1536) == (scan.chunk_selective_scan_fwd, scan.chunk_selective_scan_bwd)
    monkeypatch.setenv("FLA_MAMBA_SCAN", "sequential")
    assert scan_passes(narrow, 1536) == (sequential_selective_scan_fwd, sequential_selective_scan_bwd)
    monkeypatch.setenv("FLA_MAMBA_SCAN", "fast")
    with pytest.raises(ValueError, match="FLA_MAMBA_SCAN='fast' is not one of"):
        scan_passes(wide, 1536)


@pytest.mark.slow
@pytest.mark.parametrize("T, Di, Ds", [(100, 20, 16), (70, 5, 64), (40, 3, 5)])
def test_triton_float32_wide(T, Di, Ds, scan_path):
    _check(chunk_selective_scan, "triton", _inputs(2, T, Di, Ds, torch.float32, num_states=2), tol(torch.float32, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [[1, 35, 1, 0, 6]])
def test_varlen(backend, lengths, scan_path):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    inputs = _inputs(1, sum(lengths), 3, 3, torch.float32, num_states=len(lengths))
    _check(chunk_selective_scan, backend, inputs, tol(torch.float32, 2), cu_seqlens=cu)


@pytest.mark.parametrize("backend", BACKENDS)
def test_varlen_matches_per_sequence_calls(backend, scan_path_slow_one_pass):
    cu = torch.tensor([0, 1, 34, 35, 40], dtype=torch.int64, device=DEVICE)
    inputs = _inputs(1, 40, 3, 4, torch.float32, num_states=4)
    h0 = inputs.pop("initial_state")
    with using(backend), torch.no_grad():
        y, ht = chunk_selective_scan(**inputs, initial_state=h0, output_final_state=True, cu_seqlens=cu)
        for i, (bos, eos) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
            piece = {k: (v[:, bos:eos] if v.dim() == 3 else v) for k, v in inputs.items()}
            yi, hi = chunk_selective_scan(**piece, initial_state=h0[i : i + 1], output_final_state=True)
            assert_close(f"y[{i}]", yi, y[:, bos:eos], tol(torch.float32, 2))
            assert_close(f"ht[{i}]", hi, ht[i : i + 1], tol(torch.float32, 2))


@pytest.mark.parametrize("with_grad", [False, True])
def test_fused_recurrent_triton(with_grad):
    """Decoding (no gradient) runs the token-by-token kernel; with a gradient, the chunk kernels."""
    cu = torch.tensor([0, 1, 20, 37], dtype=torch.int32, device=DEVICE)
    inputs = _inputs(1, 37, 6, 5, torch.float32, num_states=3)
    if with_grad:
        _check(fused_recurrent_selective_scan, "triton", inputs, tol(torch.float32, 2), cu_seqlens=cu)
        return
    with using("triton"), torch.no_grad():
        y, ht = fused_recurrent_selective_scan(**inputs, dt_softplus=True, output_final_state=True, cu_seqlens=cu)
    ref_y, ref_ht = naive_selective_scan(
        **{k: to_reference(v) for k, v in inputs.items()}, dt_softplus=True, output_final_state=True, cu_seqlens=cu
    )
    assert_close("y", ref_y, y, tol(torch.float32, 2))
    assert_close("ht", ref_ht, ht, tol(torch.float32, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mamba_ssm_layout_and_state_update(backend):
    """selective_scan_fn ([B, Di, L] layout) == the sequence-first op; selective_state_update == one more token."""
    inputs = _inputs(2, 9, 6, 4, torch.float32)
    x, dt, A, B, C, D, z, bias = (inputs[k] for k in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias"))
    with using(backend), torch.no_grad():
        ref, ref_ht = chunk_selective_scan(x, dt, A, B, C, D, z, bias, True, output_final_state=True)
        out, last = selective_scan_fn(
            x[:, :-1].mT, dt[:, :-1].mT, A, B[:, :-1].mT, C[:, :-1].mT, D, z[:, :-1].mT, delta_bias=bias,
            delta_softplus=True, return_last_state=True,
        )  # fmt: skip
        assert out.shape == (2, 6, 8) and last.shape == (2, 6, 4)
        assert_close("out", ref[:, :-1].mT, out, tol(torch.float32, 2))
        step = selective_state_update(last, x[:, -1], dt[:, -1], A, B[:, -1], C[:, -1], D, z[:, -1], bias, True)
    assert_close("step", ref[:, -1], step, tol(torch.float32, 2))
    assert_close("state", ref_ht, last, tol(torch.float32, 2))


@pytest.mark.parametrize("op", OPS)
def test_bad_inputs(op):
    inputs = _inputs(2, 10, 8, 4, torch.float32, num_states=2)
    x, dt, A, B, C = (inputs[k] for k in ("x", "dt", "A", "B", "C"))
    with pytest.raises(ValueError, match="x has shape"):
        op(x[0], dt, A, B, C)
    with pytest.raises(ValueError, match="dt has shape"):
        op(x, dt[:, :5], A, B, C)
    with pytest.raises(ValueError, match=r"A has shape \[7, 4\]"):
        op(x, dt, A[:7], B, C)
    with pytest.raises(ValueError, match="d_state = 65"):
        op(x, dt, torch.zeros(8, 65), B, C)
    with pytest.raises(ValueError, match="B has shape"):
        op(x, dt, A, B[..., :3], C)
    with pytest.raises(ValueError, match="C has shape"):
        op(x, dt, A, B, C[:1])
    with pytest.raises(ValueError, match="D has shape"):
        op(x, dt, A, B, C, D=torch.ones(7))
    with pytest.raises(ValueError, match="z has shape"):
        op(x, dt, A, B, C, z=x[:, :3])
    with pytest.raises(ValueError, match="dt_bias has shape"):
        op(x, dt, A, B, C, dt_bias=torch.ones(8, 1))
    with pytest.raises(ValueError, match="initial_state has shape"):
        op(x, dt, A, B, C, initial_state=inputs["initial_state"][:1])
    with pytest.raises(TypeError, match="x has dtype"):
        op(x.long(), dt, A, B, C)
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(x, dt, A, B, C, cu_seqlens=torch.tensor([0, 10, 20], dtype=torch.int32))  # B != 1
    one = [t[:1] for t in (x, dt)]
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(one[0], one[1], A, B[:1], C[:1], cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32))  # last != T
    with pytest.raises(ValueError, match="cu_seqlens"):
        op(one[0], one[1], A, B[:1], C[:1], cu_seqlens=torch.tensor([0, 6, 4, 10], dtype=torch.int32))
    with pytest.raises(TypeError, match="cu_seqlens"):
        op(one[0], one[1], A, B[:1], C[:1], cu_seqlens=torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match=r"B has shape \[2, 2, 4, 10\]"):
        selective_scan_fn(x.mT, dt.mT, A, B.mT[:, None].expand(2, 2, 4, 10), C.mT)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_sizes(dtype, scan_path):
    """Mamba-130M-like sizes: Di = 1536, Ds = 16, T = 1000 (+ a packed batch), every gradient."""
    inputs = _inputs(2, 1000, 1536, 16, dtype, num_states=2)
    _check(chunk_selective_scan, "triton", inputs, tol(dtype, 5))
    cu = torch.tensor([0, 1, 700, 701, 2000], dtype=torch.int32, device=DEVICE)
    packed = _inputs(1, 2000, 1536, 16, dtype, num_states=4)
    _check(chunk_selective_scan, "triton", packed, tol(dtype, 5), cu_seqlens=cu)


@pytest.mark.slow  # ~50-100 s: 67 kernel variants through the GPU compiler
def test_scan_kernels_compile_for_sm90_without_a_gpu():
    """The selective scan, the SSD's fused stages, ABC's gate scan and NSA's top-k compile for sm_90 in a process
    without TRITON_INTERPRET (tests/fla/ops/scan_compile_check.py): the interpreter runs code the GPU compiler
    refuses."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = child_pythonpath()
    run = subprocess.run([sys.executable, "-m", "tests.fla.ops.scan_compile_check"], env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.stdout.splitlines()) == 15 + 14 + 20 + 24 + 8, run.stdout  # scans, SSD, gate scan, top-k
