"""Mamba's selective scan against its memory floor, and the Mamba / Mamba2 layers against fla 0.6.0's, CUDA only.

Two tables in one run (bf16, ``triton.testing.do_bench`` medians, ms):

- ``chunk_selective_scan`` (``dt`` softplus with ``dt_bias``, ``D`` skip, ``z`` gate, as the Mamba layer calls it)
  at B=8, T=2048, d_inner=1536, d_state=16: forward and forward + backward, beside the memory floor of each: the
  bytes the op must read and write at least (its bf16 inputs and outputs, once; the fp32 ``A``/``D``/``dt_bias``
  are negligible) divided by the copy bandwidth measured on this card in the same run (``clone`` of 1 GiB).
- The ``Mamba`` and ``Mamba2`` layers at the 340M configs' sizes (hidden 1024, expand 2; Mamba d_state 16, Mamba2
  32 heads of 64 with d_state 128), B=8, T=2048: ours (our Triton selective scan / SSD on the simple-GLA stages)
  and, with ``--fla-path``, fla 0.6.0's in a separate process. fla 0.6.0 runs these layers through the external
  ``mamba_ssm`` / ``causal_conv1d`` packages when installed and through its PyTorch fallback
  (``slow_forward`` / ``torch_forward``) otherwise; the table says which one ran.

    python -m benchmarks.ops.bench_ssm --fla-path /tmp/fla060 --out outputs/ops_ssm.md

This file imports nothing from the repository at module level, so it also serves as the fla worker
(``--worker fla``, run from outside the repository with fla 0.6.0 first on the path).
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

SCAN = {"B": 8, "T": 2048, "Di": 1536, "Ds": 16}
LAYER = {"B": 8, "T": 2048, "hidden": 1024}
ELEMENT = 2  # bytes of a bf16 element


def _time(fn, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """do_bench medians (ms) of ``fn()`` without autograd and of ``fn()`` + backward."""
    from triton.testing import do_bench

    with torch.no_grad():
        fwd = do_bench(fn, return_mode="median")
    out = fn()
    grad = torch.randn_like(out)

    def step():
        fn().backward(grad)

    return float(fwd), float(do_bench(step, grad_to_none=inputs, return_mode="median"))


def copy_bandwidth() -> float:
    """Bytes per ms of a device-to-device copy of 1 GiB (read + write), measured."""
    from triton.testing import do_bench

    src = torch.empty(1 << 29, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * ELEMENT / ms


def scan_floor_bytes() -> tuple[int, int]:
    """Bytes the scan must move at least: forward reads x, dt, z ``[B, T, Di]`` and B, C ``[B, T, Ds]``, writes y;
    forward + backward adds the backward's reads (x, dt, z, dy, B, C) and writes (dx, ddt, dz, dB, dC)."""
    B, T, Di, Ds = SCAN["B"], SCAN["T"], SCAN["Di"], SCAN["Ds"]
    wide, narrow = B * T * Di * ELEMENT, B * T * Ds * ELEMENT
    fwd = 4 * wide + 2 * narrow
    bwd = 7 * wide + 4 * narrow
    return fwd, fwd + bwd


SCAN_PATHS = {"sequential": "one pass per direction", "chunk": "chunk-parallel stages"}


def scan_rows() -> list[str]:
    """One row per Triton path of ``chunk_selective_scan`` (``FLA_MAMBA_SCAN``); ``auto`` takes the one pass at
    these sizes (8 sequences x 48 channel blocks)."""
    from fla.ops.mamba import chunk_selective_scan

    B, T, Di, Ds = SCAN["B"], SCAN["T"], SCAN["Di"], SCAN["Ds"]
    dev, dt = "cuda", torch.bfloat16
    x, delta, z = (torch.randn(B, T, Di, device=dev, dtype=dt) for _ in range(3))
    Bm, Cm = (torch.randn(B, T, Ds, device=dev, dtype=dt) for _ in range(2))
    A = -torch.rand(Di, Ds, device=dev).add(0.5)
    D, dt_bias = torch.randn(Di, device=dev), torch.randn(Di, device=dev) - 4
    inputs = [t.requires_grad_() for t in (x, delta, Bm, Cm, z, A, D, dt_bias)]

    def fn():
        return chunk_selective_scan(x, delta, A, Bm, Cm, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)[0]

    bw = copy_bandwidth()
    floor_fwd, floor_fwdbwd = (b / bw for b in scan_floor_bytes())
    lines = [
        f"copy bandwidth: {bw / 1e6:.0f} GB/s (1 GiB clone, read + write)",
        "",
        "| op | path (`FLA_MAMBA_SCAN`) | fwd_ms | fwd_floor_ms | fwd/floor | fwdbwd_ms | fwdbwd_floor_ms | "
        "fwdbwd/floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    saved = os.environ.get("FLA_MAMBA_SCAN")
    try:
        for path, what in SCAN_PATHS.items():
            os.environ["FLA_MAMBA_SCAN"] = path
            fwd, fwdbwd = _time(fn, inputs)
            lines.append(
                f"| chunk_selective_scan | {what} (`{path}`) | {fwd:.3f} | {floor_fwd:.3f} | {fwd / floor_fwd:.2f} | "
                f"{fwdbwd:.3f} | {floor_fwdbwd:.3f} | {fwdbwd / floor_fwdbwd:.2f} |"
            )
    finally:
        if saved is None:
            os.environ.pop("FLA_MAMBA_SCAN", None)
        else:
            os.environ["FLA_MAMBA_SCAN"] = saved
    return lines


def _layers(impl: str) -> dict:
    """``name -> (layer constructor, path description)`` in whichever ``fla`` this process imports."""
    from fla.layers import Mamba, Mamba2

    hidden = LAYER["hidden"]
    # backend: fla 0.6.0 takes its Triton conv when causal_conv1d is absent (ours ignores it)
    extra = {"backend": "triton", "layer_idx": 0}
    if impl == "fla":
        m1, m2 = sys.modules["fla.layers.mamba"], sys.modules["fla.layers.mamba2"]  # the modules, not the classes
        paths = ("mamba_ssm" if m1.is_fast_path_available else "PyTorch fallback",
                 "mamba_ssm" if m2.is_fast_path_available else "PyTorch fallback")  # fmt: skip
    else:
        paths = ("our selective scan", "our SSD (simple-GLA stages)")
    return {
        "Mamba": (lambda: Mamba(hidden_size=hidden, state_size=16, intermediate_size=2 * hidden, **extra), paths[0]),
        "Mamba2": (lambda: Mamba2(num_heads=32, head_dim=64, hidden_size=hidden, state_size=128, **extra), paths[1]),
    }


def _layer_row(name: str, impl: str, build, path: str) -> dict:
    layer = build().to(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(LAYER["B"], LAYER["T"], LAYER["hidden"], device="cuda", dtype=torch.bfloat16)
    x.requires_grad_()
    row = {"layer": name, "impl": impl, "path": path}
    try:
        fwd, fwdbwd = _time(lambda: layer(x)[0], [x, *layer.parameters()])
        return {**row, "fwd_ms": f"{fwd:.3f}", "fwdbwd_ms": f"{fwdbwd:.3f}"}
    except torch.OutOfMemoryError as e:
        return {**row, "fwd_ms": f"OOM ({str(e)[:60]})", "fwdbwd_ms": "-"}


def layer_rows(impl: str) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for name, (build, path) in _layers(impl).items():
        rows.append(_layer_row(name, impl, build, path))
        torch.cuda.empty_cache()
    return rows


def fla_layer_rows(fla_path: str) -> list[dict]:
    """Run this file as ``--worker fla`` with ``fla_path`` first on the path, outside the repository."""
    env = {**os.environ, "PYTHONPATH": fla_path}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "fla"]
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fla worker failed ({done.returncode}); its stderr is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def layer_table(rows: list[dict]) -> list[str]:
    ours = {r["layer"]: r for r in rows if r["impl"] == "ours"}
    lines = ["| layer | impl | path | fwd_ms | fwdbwd_ms | fwdbwd vs ours |", "|---|---|---|---|---|---|"]
    for r in rows:
        try:
            ratio = f"{float(r['fwdbwd_ms']) / float(ours[r['layer']]['fwdbwd_ms']):.1f}x"
        except (KeyError, ValueError):
            ratio = "-"
        lines.append(f"| {r['layer']} | {r['impl']} | {r['path']} | {r['fwd_ms']} | {r['fwdbwd_ms']} | {ratio} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the markdown tables here")
    parser.add_argument("--fla-path", default=None, help="directory holding fla 0.6.0 (pip install --target)")
    parser.add_argument("--scan-only", action="store_true", help="the selective-scan table alone (no layers)")
    parser.add_argument("--worker", choices=["fla"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_ssm needs a CUDA device")
    if args.worker == "fla":
        print(json.dumps(layer_rows("fla")))
        return
    import triton

    # here, not at module level: the fla worker runs outside the repository
    from benchmarks.report import CutShort, emit, stop_on_sigterm

    lines = [
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}",
        "",
        f"command: `python -m benchmarks.ops.bench_ssm {' '.join(sys.argv[1:])}`",
        "",
    ]
    try:  # the scan first (seconds), then the layers (their compiles take minutes): a time limit keeps the scan
        with stop_on_sigterm():
            lines += [f"selective scan: B={SCAN['B']}, T={SCAN['T']}, d_inner={SCAN['Di']}, d_state={SCAN['Ds']}, bf16"]
            lines += ["", *scan_rows(), ""]
            print("\n".join(lines), file=sys.stderr, flush=True)
            if not args.scan_only:
                rows = layer_rows("ours") + (fla_layer_rows(args.fla_path) if args.fla_path else [])
                lines += [f"layers: B={LAYER['B']}, T={LAYER['T']}, hidden={LAYER['hidden']}, bf16 weights and "
                          "activations", "", *layer_table(rows)]  # fmt: skip
    except CutShort:
        lines += ["", "(cut short by SIGTERM)"]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
