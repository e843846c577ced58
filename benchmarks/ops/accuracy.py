"""Accuracy of the Triton path at long sequences: relative errors of the output, the final state and every
gradient against the float64 PyTorch chunked form, for A/B comparisons of kernel variants.

Runs wherever the Triton path runs: compiled on CUDA, the interpreter on a CPU (set ``TRITON_INTERPRET=1``;
float32/float16 there, since the interpreter's bf16 ``tl.dot`` is wrong). One table row per (op, T, dtype):
``||x - ref|| / ||ref||`` for each tensor. The loss is ``sum(o * do) + sum(ht * dht)`` with random ``do, dht``.

    TRITON_INTERPRET=1 python -m benchmarks.ops.accuracy --ops chunk_simple_gla chunk_gated_delta_rule \\
        --T 2048 8192 --dtype float16 --shape 1,1,64,64
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from benchmarks.report import emit

OPS = ("chunk_simple_gla", "chunk_gla", "chunk_delta_rule", "chunk_gated_delta_rule")


def _ops():
    """name -> (op, float64 reference, gate kind, whether it takes beta, extra keyword arguments)."""
    from fla.ops.delta_rule import chunk_delta_rule, naive_chunk_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, naive_chunk_gated_delta_rule
    from fla.ops.gla import chunk_gla, naive_chunk_gla
    from fla.ops.simple_gla import chunk_simple_gla, naive_chunk_simple_gla

    l2 = {"use_qk_l2norm_in_kernel": True}
    return {
        "chunk_simple_gla": (chunk_simple_gla, naive_chunk_simple_gla, "scalar", False, {}),
        "chunk_gla": (chunk_gla, naive_chunk_gla, "vector", False, {}),
        "chunk_delta_rule": (chunk_delta_rule, naive_chunk_delta_rule, None, True, l2),
        "chunk_gated_delta_rule": (chunk_gated_delta_rule, naive_chunk_gated_delta_rule, "scalar", True, l2),
    }


def _inputs(shape, T, dtype, gate, beta, device, seed=0):
    B, H, K, V = shape
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=gen).to(device)

    x = {"q": rand(B, T, H, K), "k": rand(B, T, H, K), "v": rand(B, T, H, V)}
    if gate == "scalar":
        x["g"] = F.logsigmoid(rand(B, T, H)) / 16
    elif gate == "vector":
        x["g"] = F.logsigmoid(rand(B, T, H, K)) / 16
    if beta:
        x["beta"] = rand(B, T, H).sigmoid()
    x = {n: t.to(dtype) for n, t in x.items()}
    x["initial_state"] = rand(B, H, K, V)
    return x, rand(B, T, H, V), rand(B, H, K, V)


def _grads(op, x, do, dht, kwargs):
    leaves = {n: t.detach().clone().requires_grad_() for n, t in x.items()}
    o, ht = op(**leaves, output_final_state=True, **kwargs)
    (o.double() * do.double()).sum().add((ht.double() * dht.double()).sum()).backward()
    return {"o": o.detach(), "ht": ht.detach(), **{f"d{n}": t.grad for n, t in leaves.items()}}


def rows(names, Ts, dtype, shape, device) -> list[dict]:
    """One row per (op, T): ``{op, T, <tensor>: relative error}``."""
    from fla.utils import force_backend

    out, ops = [], _ops()
    for name in names:
        op, ref, gate, beta, kwargs = ops[name]
        for T in Ts:
            x, do, dht = _inputs(shape, T, dtype, gate, beta, device)
            with force_backend("triton"):
                got = _grads(op, x, do, dht, kwargs)
            want = _grads(ref, {n: t.double() for n, t in x.items()}, do, dht, kwargs)
            errs = {n: float((got[n].double() - w).norm() / w.norm()) for n, w in want.items()}
            out.append({"op": name, "T": T, **errs})
            print(f"[accuracy] {out[-1]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="+", default=["chunk_simple_gla", "chunk_gated_delta_rule"], choices=OPS)
    p.add_argument("--T", nargs="+", type=int, default=[2048])
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float16")
    p.add_argument("--shape", default="1,1,64,64", help="B,H,K,V")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = rows(args.ops, args.T, getattr(torch, args.dtype), tuple(int(s) for s in args.shape.split(",")), device)
    import triton

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'interpreter'})"
    cols = list(dict.fromkeys(c for r in table for c in r if c not in ("op", "T")))
    lines = [
        f"device: {where} | torch {torch.__version__} | triton {triton.__version__} | {args.dtype} | "
        f"B,H,K,V {args.shape}",
        "",
        "| op | T | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for r in table:
        lines.append(f"| {r['op']} | {r['T']} | " + " | ".join(f"{r[c]:.2e}" if c in r else "-" for c in cols) + " |")
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
