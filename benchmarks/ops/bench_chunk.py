"""Chunked linear-attention ops vs causal SDPA (and optionally flash-linear-attention 0.6.0), CUDA only.

Times ``fwd`` (no autograd) and ``fwd + bwd`` with ``triton.testing.do_bench`` medians (ms) at
B=4, H=16, D=128, bf16, T in {2048, 4096, 8192}:

    python -m benchmarks.ops.bench_chunk --out benchmarks/results/ops_chunk_<device>.md

``--fla-path DIR`` also times fla 0.6.0's chunk_gla / chunk_simple_gla in a separate process that
imports ``fla`` from ``DIR`` (both packages are called ``fla``, so they cannot share a process):

    pip install --no-deps --target /tmp/fla060 fla-core==0.6.0 flash-linear-attention==0.6.0
    python -m benchmarks.ops.bench_chunk --fla-path /tmp/fla060 --out ...

This file imports nothing from the repository at module level, so the same file serves as the
worker of that process (``--worker fla``, run from outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

SHAPE = {"B": 4, "H": 16, "D": 128}
SEQ_LENS = (2048, 4096, 8192)
COLUMNS = ("op", "impl", "T", "fwd_ms", "fwdbwd_ms")


def _time(fn, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """do_bench medians (ms) of ``fn()`` without autograd and of ``fn()`` + backward."""
    from triton.testing import do_bench

    with torch.no_grad():
        fwd = do_bench(fn, return_mode="median")
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    grad = torch.randn_like(out)

    def fwd_bwd():
        o = fn()
        (o[0] if isinstance(o, tuple) else o).backward(grad)

    fwdbwd = do_bench(fwd_bwd, grad_to_none=inputs, return_mode="median")
    return round(float(fwd), 3), round(float(fwdbwd), 3)


def _inputs(T: int, gate: str | None) -> list[torch.Tensor]:
    B, H, D = SHAPE["B"], SHAPE["H"], SHAPE["D"]
    dev, dt = "cuda", torch.bfloat16
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(3))
    ts = [q, k, v]
    if gate == "vector":
        ts.append((F.logsigmoid(torch.randn(B, T, H, D, device=dev)) / 16).to(dt))
    elif gate == "scalar":
        ts.append(F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dt))
    return [t.requires_grad_() for t in ts]


def _ops(impl: str) -> dict:
    """``name -> (callable(q, k, v, [g]), gate kind)`` for ``impl`` in ours / fla."""
    if impl == "fla":
        import fla

        if not fla.__version__.startswith("0.6"):
            raise RuntimeError(f"--worker fla imported fla {fla.__version__} from {fla.__file__}, expected 0.6.x")
        from fla.ops.gla import chunk_gla
        from fla.ops.simple_gla import chunk_simple_gla

        return {"chunk_gla": (chunk_gla, "vector"), "chunk_simple_gla": (chunk_simple_gla, "scalar")}
    from fla.ops import chunk_gla, chunk_linear_attn, chunk_retention, chunk_simple_gla

    return {
        "chunk_gla": (chunk_gla, "vector"),
        "chunk_simple_gla": (chunk_simple_gla, "scalar"),
        "chunk_retention": (chunk_retention, None),
        "chunk_linear_attn": (lambda q, k, v: chunk_linear_attn(q, k, v, normalize=False), None),
    }


def rows_for(impl: str, seq_lens) -> list[dict]:
    rows = []
    for name, (op, gate) in _ops(impl).items():
        for T in seq_lens:
            ts = _inputs(T, gate)
            fwd, fwdbwd = _time(lambda op=op, ts=ts: op(*ts), ts)
            rows.append({"op": name, "impl": impl, "T": T, "fwd_ms": fwd, "fwdbwd_ms": fwdbwd})
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


def fla_rows(fla_path: str, seq_lens) -> list[dict]:
    """Run this file as ``--worker fla`` with ``fla_path`` first on the path, outside the repository."""
    env = {**os.environ, "PYTHONPATH": fla_path}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "fla", "--T", *map(str, seq_lens)]
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fla worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def to_markdown(rows: list[dict], command: str) -> str:
    import triton

    head = (
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}\n\nshape: B={SHAPE['B']}, H={SHAPE['H']}, D={SHAPE['D']}, bf16; "
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
    parser.add_argument("--worker", choices=["fla"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_chunk needs a CUDA device")
    if args.worker == "fla":
        print(json.dumps(rows_for("fla", args.T)))
        return
    rows = rows_for("ours", args.T) + sdpa_rows(args.T)
    if args.fla_path:
        rows += fla_rows(args.fla_path, args.T)
    rows.sort(key=lambda r: (r["op"], r["T"], r["impl"]))
    table = to_markdown(rows, "python -m benchmarks.ops.bench_chunk " + " ".join(sys.argv[1:]))
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
