"""Tile widths of the shared chunk-pipeline stages against fwd+bwd time, CUDA only (an experiment).

The GLA-family stages (`fla.ops.common`: state recurrence ``chunk_h``, output ``chunk_o``, backward
``chunk_bwd``) tile every feature dim at most 64 wide (:func:`fla.ops.common.tuning.block_size`), so
at D=128 the output and dv stages form the ``[BT, BT]`` scores twice (once per V block) and the
dq/dk stage forms ``do v^T`` twice (once per K block), while the sequential state recurrence runs
only ``(K/64) (V/64) N H`` programs. A variant sets the cap of some stage modules (``o128``: output
tiles 128 wide, ``h32``: state tiles 32 wide, ``h32+o128+bwd128``: several); ``+8w`` variants also
give those stages' kernels 8-warp autotune configs. This times each op's fwd+bwd (do_bench median,
ms, bf16, B=4 H=16 D=128 or ``--shape``) per variant and checks every variant's outputs and
gradients against the default's (max relative difference: a miscompile shows up here, not as a
fast time):

    python -m benchmarks.ops.sweep_tiles --T 2048 8192 --variants base o128 h32 --out sweep_tiles.md
    python -m benchmarks.ops.sweep_tiles --ops chunk_gla --shape 8,2048,4,128,256   # GLA-340M's layer
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys

import torch
import triton
from triton.testing import do_bench

from benchmarks.ops.bench_chunk import _inputs, _ops, fwd_bwd_step
from benchmarks.report import emit

STAGE_MODULES = {"h": "fla.ops.common.chunk_h", "o": "fla.ops.common.chunk_o", "bwd": "fla.ops.common.chunk_bwd"}
STAGE_KERNELS = {
    "h": ["chunk_state_kernel"],
    "o": ["chunk_output_fwd_kernel"],
    "bwd": ["chunk_dv_bwd_kernel", "chunk_dqkg_bwd_kernel"],
}
VARIANTS = ("base", "o128", "bwd128", "h32", "h128", "o128+bwd128+h32")


def _autotuner(kernel):
    node = kernel
    while node is not None and not isinstance(node, triton.runtime.autotuner.Autotuner):
        node = getattr(node, "fn", None)
    return node


@contextlib.contextmanager
def variant(stages: list[str], warps8: bool):
    """Set the tile cap of each ``stage + cap`` in ``stages`` (and add 8-warp configs to their kernels) inside the
    block."""
    import importlib

    from fla.ops.common.tuning import block_size

    saved = []
    for item in stages:
        stage, cap = item.rstrip("0123456789"), int(item.lstrip("abcdefghijklmnopqrstuvwxyz"))
        mod = importlib.import_module(STAGE_MODULES[stage])
        saved.append((mod, "block_size", mod.block_size))
        mod.block_size = lambda dim, cap=64, new=cap: block_size(dim, cap=new)
        if warps8:  # new configs: forget the tuned choice (and the lean launcher's copy of it) while inside
            for name in STAGE_KERNELS[stage]:
                kernel = getattr(mod, name)
                tuner = _autotuner(kernel)
                saved += [(tuner, "configs", tuner.configs), (tuner, "cache", tuner.cache)]
                tuner.configs = tuner.configs + [triton.Config({}, num_warps=8, num_stages=s) for s in (2, 3)]
                tuner.cache = {}
                if hasattr(kernel, "_entries"):
                    saved.append((kernel, "_entries", kernel._entries))
                    kernel._entries = {}
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def _shaped_inputs(T: int, gate: str | None, shape: str | None) -> list[torch.Tensor]:
    """bench_chunk's inputs, reshaped to ``B,T,H,K,V`` when ``shape`` is given (same distributions)."""
    if shape is None:
        return _inputs(T, gate)
    B, T_, H, K, V = (int(x) if x else T for x in shape.split(","))
    base = _inputs(T_, gate, B=B, H=H)
    out = []
    for i, t in enumerate(base):
        t = t.detach()
        if t.dim() == 4:
            width = V if i == 2 else K
            t = t[..., :width] if width <= t.shape[-1] else t.repeat(1, 1, 1, -(-width // t.shape[-1]))[..., :width]
            if i == 1 and gate in ("delta", "gated_delta"):  # unit-norm keys again
                t = torch.nn.functional.normalize(t.float(), dim=-1).to(t.dtype)
        out.append(t.contiguous().requires_grad_())
    return out


def _results(op, ts):
    for t in ts:
        t.grad = None
    out = op(*ts)
    o = out[0] if isinstance(out, tuple) else out
    torch.manual_seed(1)
    o.backward(torch.randn_like(o))
    return [o.detach().float()] + [t.grad.detach().float() for t in ts]


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(a, b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ops = "chunk_linear_attn chunk_retention chunk_simple_gla chunk_gla chunk_delta_rule chunk_gated_delta_rule"
    p.add_argument("--ops", nargs="*", default=ops.split())
    p.add_argument("--T", type=int, nargs="*", default=[2048, 8192])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--shape", default=None, help="B,T,H,K,V (T from --T when empty); default 4,-,16,128,128")
    p.add_argument("--no-warps8", action="store_true", help="skip the +8w variants")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    ops = _ops("ours")
    rows = []
    for name in args.ops:
        op, gate = ops[name]
        for T in args.T:
            ts = _shaped_inputs(T, gate, args.shape)
            ref = _results(op, ts)
            for v in args.variants:
                for warps8 in (False,) if v == "base" or args.no_warps8 else (False, True):
                    stages = [] if v == "base" else v.split("+")
                    with variant(stages, warps8):
                        try:
                            rel = _rel(_results(op, ts), ref)
                            ms = float(
                                do_bench(
                                    fwd_bwd_step(lambda op=op, ts=ts: op(*ts)), grad_to_none=ts, return_mode="median"
                                )
                            )
                            cell = f"{ms:.3f}"
                        except Exception as e:  # noqa: BLE001 - a failing variant is a result (e.g. out of resources)
                            rel, cell = float("nan"), f"error: {type(e).__name__}"
                    rows.append((name, T, v + ("+8w" if warps8 else ""), cell, rel))
                    print(f"[sweep_tiles] {rows[-1]}", file=sys.stderr, flush=True)
            del ts
            torch.cuda.empty_cache()
    lines = [
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}",
        f"command: python -m benchmarks.ops.sweep_tiles {' '.join(sys.argv[1:])}",
        "",
        "| op | T | tiles 128 in | fwd+bwd ms | max rel diff vs base |",
        "|---|---|---|---|---|",
        *(f"| {n} | {T} | {v} | {c} | {r:.2e} |" for n, T, v, c, r in rows),
    ]
    text = "\n".join(lines) + "\n"
    emit(text, args.out)


if __name__ == "__main__":
    main()
