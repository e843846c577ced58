"""Chunked linear-attention ops vs causal SDPA (and optionally flash-linear-attention 0.6.0), CUDA only.

Times ``fwd`` (no autograd) and ``fwd + bwd`` with ``triton.testing.do_bench`` medians (ms) at
B=4, H=16, D=128, bf16, T in {2048, 4096, 8192}:

    python -m benchmarks.ops.bench_chunk --out outputs/ops_chunk.md

The wave-2 ops (rwkv6, gsa, abc with 64 slots, kda, comba, hgrn, lightning, FoX's ``parallel_forgetting_attn``,
NSA's ``parallel_nsa`` without its window branch)
run at the same B, H, D in both packages (fla 0.6.0 has them under the same names; ``chunk_rwkv7_kept`` is
``chunk_rwkv7(..., disable_recompute=True)``); ``chunk_mamba2_ssd`` is ours
only (compare it with ``chunk_simple_gla``).

The delta-rule ops (``chunk_delta_rule``, ``chunk_gated_delta_rule``) get L2-normalized keys and
``beta = sigmoid(x)``; ``decode_*`` rows time one token of ``fused_recurrent_(gated_)delta_rule``
(B=32, H=16, D=128, with initial and final state, no autograd; ``fwdbwd_ms`` is ``-``), eagerly
(host time included: a Python call per token) and replayed from a CUDA graph (``*_cudagraph``);
``decode_state_copy_floor`` copies the fp32 state (the bytes a decode step reads and writes: its floor).

``--fla-path DIR`` also times fla 0.6.0's ops (the same list; one it refuses gets its error in the
table) in a separate process that
imports ``fla`` from ``DIR`` (both packages are called ``fla``, so they cannot share a process):

    pip install --no-deps --target /tmp/fla060 fla-core==0.6.0 flash-linear-attention==0.6.0
    python -m benchmarks.ops.bench_chunk --fla-path /tmp/fla060 --out ...

``--skip-ours`` times fla 0.6.0's column alone (ours measured in another run on the same card): fla's autotuning
takes minutes per op, and a device window may not hold both.

A ``timeout`` at its limit (SIGTERM) still writes the table of the rows measured before it, fla's included (the
worker reports each row as it goes); the command line in the table says so.

This file imports nothing from the repository at module level, so the same file serves as the
worker of that process (``--worker fla``, run from outside the repository).

``--warm-jobs N`` first runs every (package, op) pair in its own process, N at a time, and throws their
figures away: they fill Triton's on-disk compile cache in parallel (a first call compiles every autotuner
config, minutes per op and most of all for fla 0.6.0's wide config lists). The timed pass that follows, one
process at a time, still autotunes every kernel undisturbed (the warm processes do not keep their autotuning
choices: ``TRITON_CACHE_AUTOTUNING`` and fla's ``FLA_CACHE_RESULTS`` are off there), from compiled binaries.
``--autotune-ms R`` shortens that tuning in both packages: each config is benchmarked for ``R`` ms after ``R / 4``
ms of warm-up (Triton's default: 100 and 25), plenty for kernels of well under a millisecond, and the timed pass of
fla 0.6.0's wide config lists fits in a device window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

SHAPE = {"B": 4, "H": 16, "D": 128}
SEQ_LENS = (2048, 4096, 8192)
COLUMNS = ("op", "impl", "T", "fwd_ms", "fwdbwd_ms")


def fwd_bwd_step(fn):
    """A callable running ``fn()`` (an op returning ``o`` or ``(o, state)``) and its backward from one
    fixed random output gradient."""
    out = fn()
    grad = torch.randn_like(out[0] if isinstance(out, tuple) else out)

    def step():
        o = fn()
        (o[0] if isinstance(o, tuple) else o).backward(grad)

    return step


def _time(fn, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """do_bench medians (ms) of ``fn()`` without autograd and of ``fn()`` + backward."""
    from triton.testing import do_bench

    with torch.no_grad():
        fwd = do_bench(fn, return_mode="median")
    fwdbwd = do_bench(fwd_bwd_step(fn), grad_to_none=inputs, return_mode="median")
    return round(float(fwd), 3), round(float(fwdbwd), 3)


DECODE_SHAPE = {"B": 32, "H": 16, "D": 128}


def _inputs(T: int, gate: str | None, B: int | None = None, H: int | None = None) -> list[torch.Tensor]:
    B, H, D = B or SHAPE["B"], H or SHAPE["H"], SHAPE["D"]
    dev, dt = "cuda", torch.bfloat16
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(3))
    if gate in ("delta", "gated_delta"):
        k = F.normalize(k.float(), dim=-1).to(dt)
    ts = [q, k, v]
    if gate == "vector":
        ts.append((F.logsigmoid(torch.randn(B, T, H, D, device=dev)) / 16).to(dt))
    elif gate in ("scalar", "gated_delta"):
        ts.append(F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dt))
    if gate in ("delta", "gated_delta"):
        ts.append(torch.rand(B, T, H, device=dev).sigmoid().to(dt))
    return [t.requires_grad_() for t in ts]


def op_inputs(gate, T: int) -> list[torch.Tensor]:
    """The inputs of an op of :func:`_ops` at ``T``: its own builder's (requiring grad) or :func:`_inputs`'."""
    return [t.requires_grad_() for t in gate(T)] if callable(gate) else _inputs(T, gate)


def short_autotune(rep_ms: float) -> None:
    """Every Triton autotuner of this process benchmarks a config for ``rep_ms`` ms (warm-up ``rep_ms / 4``)
    instead of Triton's defaults; the figures of the timed calls themselves are untouched (``_time``)."""
    import functools

    from triton.runtime import driver
    from triton.testing import do_bench

    bench = functools.partial(do_bench, warmup=rep_ms / 4, rep=rep_ms)
    driver.active.get_benchmarker = lambda: bench  # what the autotuner asks for when given no do_bench


def _delta_ops(chunk_delta_rule, chunk_gated_delta_rule) -> dict:
    return {
        "chunk_delta_rule": (chunk_delta_rule, "delta"),
        "chunk_gated_delta_rule": (chunk_gated_delta_rule, "gated_delta"),
    }


def _rand(*shape, dt=torch.bfloat16, fn=None):
    x = torch.randn(*shape, device="cuda")
    return (fn(x) if fn is not None else x).to(dt)


def _log_gate(*shape):
    """Log decays ``logsigmoid(x) / 16``: mild, as a trained layer's (fp32 cumsums inside every op)."""
    return _rand(*shape, fn=lambda x: F.logsigmoid(x) / 16)


def _unit(*shape):
    return _rand(*shape, fn=lambda x: F.normalize(x, dim=-1))


def _delta_inputs(
    B: int, T: int, H: int, D: int, vector_gate: bool = False, steps: int = 1, erase_key: bool = False
) -> list[torch.Tensor]:
    """``q, k, v, [p,] g, beta`` of a delta-rule op: unit-row keys, a log gate per token (``[B, T, H, D]`` vector,
    else a scalar ``[B, T, H]`` 16x stronger than the vector one) and ``beta`` in (0, 1); ``steps`` micro-steps per
    token (Gated DeltaProduct) for k, v and beta; ``erase_key``: Comba's unit-row ``p`` after v."""
    gate = _log_gate(B, T, H, D) if vector_gate else _log_gate(B, T, H) * 16
    n = steps * T
    p = [_unit(B, T, H, D)] if erase_key else []
    return [_rand(B, T, H, D), _unit(B, n, H, D), _rand(B, n, H, D), *p, gate, _rand(B, n, H, fn=torch.sigmoid)]


def _rwkv7_inputs(B: int, T: int, H: int, D: int) -> list[torch.Tensor]:
    """``r, w, k, v, a, b`` of RWKV7 as its layer forms them: ``a = -kk``, ``b = kk * a_gate`` (``kk`` unit rows)."""
    kk = _unit(B, T, H, D)
    b = (kk * _rand(B, T, H, D, fn=torch.sigmoid)).to(kk.dtype)
    return [_rand(B, T, H, D), _log_gate(B, T, H, D), _rand(B, T, H, D), _rand(B, T, H, D), -kk, b]


def _wave2_ops() -> dict:
    """``name -> (op, inputs(T))`` of the wave-2 chunk ops that fla 0.6.0 has under the same module and
    signature (whichever ``fla`` this process imports), each at the benchmark's B, H, D; slot ops: 64 slots."""
    from fla.ops.abc import chunk_abc
    from fla.ops.comba import chunk_comba
    from fla.ops.forgetting_attn import parallel_forgetting_attn
    from fla.ops.gated_delta_product import chunk_gated_delta_product
    from fla.ops.gsa import chunk_gsa
    from fla.ops.hgrn import chunk_hgrn
    from fla.ops.kda import chunk_kda
    from fla.ops.lightnet import chunk_lightnet
    from fla.ops.lightning_attn import chunk_lightning_attn
    from fla.ops.mesa_net import chunk_mesa_net
    from fla.ops.nsa import parallel_nsa
    from fla.ops.path_attn import parallel_path_attn
    from fla.ops.rwkv6 import chunk_rwkv6
    from fla.ops.rwkv7 import chunk_rwkv7

    B, H, D, M = SHAPE["B"], SHAPE["H"], SHAPE["D"], 64
    qkv = lambda T: [_rand(B, T, H, D) for _ in range(3)]  # noqa: E731
    return {
        "chunk_rwkv6": (chunk_rwkv6, lambda T: [*qkv(T), _log_gate(B, T, H, D), _rand(H, D)]),
        "chunk_gsa": (chunk_gsa, lambda T: [*qkv(T), _rand(B, T, H, M), _log_gate(B, T, H, M)]),
        "chunk_abc": (chunk_abc, lambda T: [*qkv(T), _rand(B, T, H, M)]),
        "chunk_kda": (chunk_kda, lambda T: _delta_inputs(B, T, H, D, vector_gate=True)),
        "chunk_comba": (chunk_comba, lambda T: _delta_inputs(B, T, H, D, erase_key=True)),
        # two Householder steps per token: keys, values and betas of 2T micro-steps, the gate of T tokens
        "chunk_gated_delta_product": (
            lambda q, k, v, g, beta: chunk_gated_delta_product(q, k, v, g, beta, num_householder=2),
            lambda T: _delta_inputs(B, T, H, D, steps=2),
        ),
        # RWKV7's transition diag(exp(w)) + a b^T with a = -kk, b = kk * a_gate (kk unit rows), as its layer forms them
        "chunk_rwkv7": (chunk_rwkv7, lambda T: _rwkv7_inputs(B, T, H, D)),
        # the same with disable_recompute=True (both packages): the backward reads the forward's states and stages
        "chunk_rwkv7_kept": (
            lambda *x: chunk_rwkv7(*x, disable_recompute=True),
            lambda T: _rwkv7_inputs(B, T, H, D),
        ),
        # MesaNet's per-key-channel lambda (> 0.25, fla's lower bound) after the delta-rule inputs
        "chunk_mesa_net": (
            chunk_mesa_net,
            lambda T: [*_delta_inputs(B, T, H, D), _rand(H, D, dt=torch.float32, fn=lambda x: 0.25 + F.softplus(x))],
        ),
        "chunk_lightnet": (chunk_lightnet, qkv),
        "chunk_hgrn": (chunk_hgrn, lambda T: [_rand(B, T, H * D), _log_gate(B, T, H * D) * 16]),
        "chunk_lightning_attn": (lambda q, k, v: chunk_lightning_attn(q, k, v, layer_idx=0, num_layers=24), qkv),
        "parallel_forgetting_attn": (
            parallel_forgetting_attn,
            lambda T: [*qkv(T), _rand(B, T, H, dt=torch.float32, fn=F.logsigmoid)],
        ),
        # PaTH: unit Householder directions w, beta in (0, 2), no forget gate
        "parallel_path_attn": (
            lambda q, k, v, w, beta: parallel_path_attn(q, k, v, w, beta),
            lambda T: [*qkv(T), _unit(B, T, H, D), _rand(B, T, H, fn=lambda x: 2 * torch.sigmoid(x))],
        ),
        # NSA's compressed + selected branches (16 blocks of 64) with one KV head for the H query heads; no window
        # branch: fla 0.6.0 runs that one through flash-attn only
        "parallel_nsa": (
            lambda q, k, v, gc, gs: parallel_nsa(q, k, v, gc, gs, None, block_counts=16, block_size=64),
            lambda T: [
                _rand(B, T, H, D),
                _rand(B, T, 1, D),
                _rand(B, T, 1, D),
                _rand(B, T, H, fn=torch.sigmoid),
                _rand(B, T, H, fn=torch.sigmoid),
            ],
        ),  # fmt: skip
    }


def _ours_only_ops() -> dict:
    """Ops fla 0.6.0 runs through mamba_ssm or PyTorch only: Mamba2's SSD (q = C, k = B in 1 group,
    v = x * dt), to compare with our chunk_simple_gla at the same size."""
    from fla.ops.mamba2 import chunk_mamba2_ssd

    B, H, D = SHAPE["B"], SHAPE["H"], SHAPE["D"]

    def ssd(T):
        x, dt = _rand(B, T, H, D), _rand(B, T, H, dt=torch.float32)
        return [x, dt, torch.zeros(H, device="cuda"), _rand(B, T, 1, D), _rand(B, T, 1, D)]

    return {"chunk_mamba2_ssd": (chunk_mamba2_ssd, ssd)}


def _decode_ops() -> dict:
    """``name -> (fused_recurrent op, gate kind)`` for the one-token decode rows (ours or, in the
    worker, fla 0.6.0's: whichever ``fla`` this process imports)."""
    from fla.ops.delta_rule import fused_recurrent_delta_rule
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    return {
        "decode_fused_recurrent_delta_rule": (fused_recurrent_delta_rule, "delta"),
        "decode_fused_recurrent_gated_delta_rule": (fused_recurrent_gated_delta_rule, "gated_delta"),
    }


PROGRESS = "[bench_chunk] "  # a measured row on stderr, as JSON: what the parent keeps of a worker cut short


def _progress(row: dict) -> None:
    print(PROGRESS + json.dumps(row), file=sys.stderr, flush=True)


def _error(e: Exception) -> str:
    """A table cell for an implementation that raised (e.g. fla 0.6.0 refusing an op on this GPU)."""
    first = str(e).splitlines()[0][:80] if str(e) else ""
    return f"error: {type(e).__name__}: {first}"


def decode_rows(impl: str) -> list[dict]:
    """One token for a decode-sized batch, state in and out, no autograd (do_bench median, ms)."""
    from triton.testing import do_bench

    B, H, D = DECODE_SHAPE["B"], DECODE_SHAPE["H"], DECODE_SHAPE["D"]
    rows = []
    for name, (op, gate) in _decode_ops().items():
        ts = [t.detach() for t in _inputs(1, gate, B=B, H=H)]
        h0 = torch.randn(B, H, D, D, device="cuda", dtype=torch.float32)
        fn = lambda op=op, ts=ts, h0=h0: op(*ts, initial_state=h0, output_final_state=True)  # noqa: E731
        try:
            with torch.no_grad():
                fwd = round(float(do_bench(fn, return_mode="median")), 4)
        except Exception as e:  # noqa: BLE001 - a refusing implementation is a result too
            fwd = _error(e)
        rows.append({"op": name, "impl": impl, "T": 1, "fwd_ms": fwd, "fwdbwd_ms": "-"})
        _progress(rows[-1])
        try:
            graph = round(_graph_time(fn), 4)
        except Exception as e:  # noqa: BLE001
            graph = _error(e)
        rows.append({"op": name + "_cudagraph", "impl": impl, "T": 1, "fwd_ms": graph, "fwdbwd_ms": "-"})
        _progress(rows[-1])
    # the floor: copying the fp32 state (the same bytes read and written as a decode step), one launch
    h0 = torch.randn(B, H, D, D, device="cuda", dtype=torch.float32)
    ht = torch.empty_like(h0)
    floor = round(float(do_bench(lambda: ht.copy_(h0), return_mode="median")), 4)
    rows.append({"op": "decode_state_copy_floor", "impl": impl, "T": 1, "fwd_ms": floor, "fwdbwd_ms": "-"})
    _progress(rows[-1])
    return rows


def _graph_time(fn) -> float:
    """Median ms of ``fn()`` replayed from a CUDA graph: the device time per decode step once the
    host is out of the loop (how a compiled / graph-captured decoder runs it)."""
    from triton.testing import do_bench

    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compile and warm up outside the capture
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    return float(do_bench(graph.replay, return_mode="median"))


def _ops(impl: str) -> dict:
    """``name -> (callable(q, k, v, [g]), gate kind or a builder of the op's inputs at T)`` for ``impl`` in
    ours / fla."""
    if impl == "fla":
        import fla

        if not fla.__version__.startswith("0.6"):
            raise RuntimeError(f"--worker fla imported fla {fla.__version__} from {fla.__file__}, expected 0.6.x")
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.gla import chunk_gla
        from fla.ops.simple_gla import chunk_simple_gla

        return {
            "chunk_gla": (chunk_gla, "vector"),
            "chunk_simple_gla": (chunk_simple_gla, "scalar"),
            **_delta_ops(chunk_delta_rule, chunk_gated_delta_rule),
            **_wave2_ops(),
        }
    from fla.ops import chunk_gla, chunk_linear_attn, chunk_retention, chunk_simple_gla
    from fla.ops.delta_rule import chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return {
        "chunk_gla": (chunk_gla, "vector"),
        "chunk_simple_gla": (chunk_simple_gla, "scalar"),
        "chunk_retention": (chunk_retention, None),
        "chunk_linear_attn": (lambda q, k, v: chunk_linear_attn(q, k, v, normalize=False), None),
        **_delta_ops(chunk_delta_rule, chunk_gated_delta_rule),
        **_wave2_ops(),
        **_ours_only_ops(),
    }


def selected(ops: dict, names: list[str] | None) -> list[str]:
    """The ops of ``ops`` named in ``names``, in the order asked for (all of them without ``names``)."""
    return [n for n in names if n in ops] if names else list(ops)


def rows_for(impl: str, seq_lens, names: list[str] | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Timed rows of ``impl``'s ops, appended to ``rows`` (a new list by default) as each is measured."""
    # the decode rows first: they take seconds, the chunk ops' first calls minutes (autotuning), so a time
    # limit cuts the chunk ops, not the decode figures
    rows = [] if rows is None else rows
    if not names or any(n.startswith("decode") for n in names):
        rows += decode_rows(impl)
    ops = _ops(impl)
    for name in selected(ops, names):
        op, gate = ops[name]
        for T in seq_lens:
            ts = op_inputs(gate, T)
            try:
                fwd, fwdbwd = _time(lambda op=op, ts=ts: op(*ts), ts)
            except Exception as e:  # noqa: BLE001 - e.g. fla 0.6.0 refusing an op on this GPU: a result too
                fwd, fwdbwd = _error(e), "-"
            rows.append({"op": name, "impl": impl, "T": T, "fwd_ms": fwd, "fwdbwd_ms": fwdbwd})
            _progress(rows[-1])
            del ts
            torch.cuda.empty_cache()
    return rows


def sdpa_rows(seq_lens) -> list[dict]:
    rows = []
    for T in seq_lens:
        ts = [t.transpose(1, 2).detach().requires_grad_() for t in _inputs(T, None)]  # [B, H, T, D]
        fwd, fwdbwd = _time(lambda ts=ts: F.scaled_dot_product_attention(*ts, is_causal=True), ts)
        rows.append({"op": "sdpa_causal", "impl": "torch", "T": T, "fwd_ms": fwd, "fwdbwd_ms": fwdbwd})
    return rows


def fla_rows(fla_path: str, seq_lens, names: list[str] | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Run this file as ``--worker fla`` with ``fla_path`` first on the path, outside the repository; its rows are
    appended to ``rows`` as the worker reports them (its progress lines pass through to our stderr), so a
    :class:`benchmarks.report.CutShort` keeps those measured before it."""
    rows = [] if rows is None else rows
    env = {**os.environ, "PYTHONPATH": fla_path}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "fla", "--T", *map(str, seq_lens)]
    cmd += ["--ops", *names] if names else []
    with tempfile.TemporaryDirectory() as cwd:
        with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as w:
            try:
                for line in w.stderr:
                    sys.stderr.write(line)
                    if line.startswith(PROGRESS) and line[len(PROGRESS) :].startswith("{"):
                        rows.append(json.loads(line[len(PROGRESS) :]))
            except BaseException:
                w.kill()
                raise
    if w.returncode != 0:
        raise RuntimeError(f"fla worker failed ({w.returncode}); its stderr is above")
    return rows


def warm_caches(fla_path: str | None, seq_lens, names: list[str] | None, jobs: int, ours: bool = True) -> None:
    """Run each op of ours (when ``ours``) and of fla 0.6.0 (with ``fla_path``) once in its own worker process,
    ``jobs`` at a time, discarding the figures: their compiles land in Triton's on-disk cache for the timed pass.
    Autotuning choices made beside other processes are not cached (``TRITON_CACHE_AUTOTUNING=0``,
    ``FLA_CACHE_RESULTS=0``)."""
    here = os.path.abspath(__file__)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    env = {**os.environ, "TRITON_CACHE_AUTOTUNING": "0", "FLA_CACHE_RESULTS": "0"}
    our_names = selected(_ops("ours"), names)
    ours_path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    plans = [(["ours", n], repo, {**env, "PYTHONPATH": ours_path}) for n in our_names] if ours else []
    if fla_path:
        fla_names = [n for n in names if not n.startswith("decode")] if names else our_names
        plans += [(["fla", n], None, {**env, "PYTHONPATH": fla_path}) for n in fla_names]

    def run(plan) -> None:
        (impl, name), cwd, penv = plan
        cmd = [sys.executable, here, "--worker", impl, "--T", *map(str, seq_lens), "--ops", name]
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(cmd, env=penv, cwd=cwd or tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        tail = done.stderr.strip().splitlines()[-1:] if done.returncode else ["ok"]
        print(f"[bench_chunk] warm {impl} {name}: {tail[0] if tail else done.returncode}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, plans))


def to_markdown(rows: list[dict], command: str) -> str:
    import triton

    head = (
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}\n\nshape: B={SHAPE['B']}, H={SHAPE['H']}, D={SHAPE['D']}, bf16 "
        f"(decode_* rows: B={DECODE_SHAPE['B']}, H={DECODE_SHAPE['H']}, D={DECODE_SHAPE['D']}, one token); "
        f"do_bench medians (ms)\n\ncommand: `{command}`\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    parser.add_argument("--T", type=int, nargs="*", default=list(SEQ_LENS), help="sequence lengths")
    parser.add_argument("--fla-path", default=None, help="directory holding fla 0.6.0 (pip install --target)")
    parser.add_argument("--ops", nargs="*", default=None, help="only these ops ('decode' for the decode rows)")
    parser.add_argument("--warm-jobs", type=int, default=0, help="compile every op first, N processes at a time")
    parser.add_argument("--warm-only", action="store_true", help="with --warm-jobs: stop after compiling")
    parser.add_argument(
        "--autotune-ms", type=float, default=None, help="autotuners benchmark each config this long (both packages)"
    )
    parser.add_argument(
        "--skip-ours", action="store_true", help="with --fla-path: time fla 0.6.0 only (ours timed in another run)"
    )
    parser.add_argument("--worker", choices=["fla", "ours"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.skip_ours and not args.fla_path:
        parser.error("--skip-ours needs --fla-path (there would be nothing to time)")
    if not torch.cuda.is_available():
        raise SystemExit("bench_chunk needs a CUDA device")
    if args.autotune_ms is not None:  # the workers this process starts inherit it
        os.environ["BENCH_CHUNK_AUTOTUNE_MS"] = str(args.autotune_ms)
    if os.environ.get("BENCH_CHUNK_AUTOTUNE_MS"):
        short_autotune(float(os.environ["BENCH_CHUNK_AUTOTUNE_MS"]))
    if args.worker:
        print(json.dumps(rows_for(args.worker, args.T, args.ops)))
        return
    if args.warm_jobs > 0:
        warm_caches(args.fla_path, args.T, args.ops, args.warm_jobs, ours=not args.skip_ours)
    if args.warm_only:
        return
    # here, not at module level: the fla worker runs outside the repository
    from benchmarks.report import CutShort, emit, stop_on_sigterm

    rows: list[dict] = []
    command = "python -m benchmarks.ops.bench_chunk " + " ".join(sys.argv[1:])
    try:  # a `timeout` limit (SIGTERM) still leaves the table of the rows measured before it
        with stop_on_sigterm():
            if not args.skip_ours:
                rows_for("ours", args.T, args.ops, rows)
                rows += sdpa_rows(args.T) if not args.ops else []
            if args.fla_path:
                fla_rows(args.fla_path, args.T, args.ops, rows)
    except CutShort:
        command += f" (cut short by SIGTERM after {len(rows)} rows)"
    rows.sort(key=lambda r: (r["op"], r["T"], r["impl"]))
    emit(to_markdown(rows, command), args.out)


if __name__ == "__main__":
    main()
