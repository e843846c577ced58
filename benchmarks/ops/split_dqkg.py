"""Where the gated delta rule's dq/dk/dw stage loses time, CUDA only (an experiment).

At T=8192 (B=4 H=16 D=128, H100) ``chunk_dqkg_bwd_kernel`` takes 1.24 ms per call for the gated delta
rule against 0.79 ms ungated and 0.51 ms for linear attention (no ``dw``): this times the stage alone
(``chunk_bwd_dqkwg`` / ``chunk_bwd_dqkg``, do_bench median, ms) with one feature switched on at a time,
so each row's difference to the one above is that feature's cost:

    linear:        dq, dk                       (no gate, no dw)
    simple GLA:    the same with G, then with dL/dG (the simple GLA backward's stage)
    +dw (fp32 dv): the delta rule's dw = -dv h^T, dv as the dh stage writes it (float32)
    +dw (bf16 dv): the same with dv in the inputs' dtype (half the bytes, bf16 instead of tf32 products)
    +G:            gate scaling of dq, dk and the scores (no gate gradient)
    +dL/dG:        the gate gradient's partial sums as well (what training runs)

    python -m benchmarks.ops.split_dqkg --shape 4,8192,16,128,128 8,2048,6,128,256 --out split_dqkg.md
"""

from __future__ import annotations

import argparse
import platform

import torch

from benchmarks.report import emit


def _inputs(B: int, T: int, H: int, K: int, V: int) -> dict[str, torch.Tensor]:
    dev, dt = "cuda", torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, dtype=dt, s=1.0):
        return (s * torch.randn(*shape, device=dev, dtype=torch.float32, generator=gen)).to(dtype)

    NT = -(-T // 64)
    g = torch.nn.functional.logsigmoid(rand(B, T, H, dtype=torch.float32)) / 16
    G = torch.cumsum(torch.nn.functional.pad(g, (0, 0, 0, NT * 64 - T)).view(B, NT, 64, H), 2).view(B, -1, H)
    return {
        "q": rand(B, T, H, K),
        "k": rand(B, T, H, K, s=K**-0.5),
        "v": rand(B, T, H, V),
        "do": rand(B, T, H, V),
        "h": rand(B, NT, H, K, V, s=0.1),
        "dh": rand(B, NT, H, K, V, s=0.1),
        "dv": rand(B, T, H, V, dtype=torch.float32),
        "G": G[:, :T].contiguous(),
    }


def rows(shape: tuple[int, int, int, int, int]) -> list[dict]:
    """One row per feature step: ``{shape, variant, ms}``."""
    from triton.testing import do_bench

    from fla.ops.common.chunk_bwd import chunk_bwd_dqkg, chunk_bwd_dqkwg
    from fla.ops.common.layout import ChunkLayout

    B, T, H, K, V = shape
    x = _inputs(B, T, H, K, V)
    layout = ChunkLayout.build(x["k"], None, 64)
    scale = K**-0.5
    base = (x["q"], x["k"], x["v"], x["h"], x["do"], x["dh"])
    dv16 = x["dv"].to(torch.bfloat16)
    variants = {
        "linear (dq, dk)": lambda: chunk_bwd_dqkg(*base, layout, scale),
        "simple GLA: +G": lambda: chunk_bwd_dqkg(*base, layout, scale, g=x["G"]),
        "simple GLA: +dL/dG": lambda: chunk_bwd_dqkg(*base, layout, scale, g=x["G"], want_dg=True),
        "+dw (fp32 dv)": lambda: chunk_bwd_dqkwg(*base, x["dv"], layout, scale),
        "+dw (bf16 dv)": lambda: chunk_bwd_dqkwg(*base, dv16, layout, scale),
        "+G (fp32 dv)": lambda: chunk_bwd_dqkwg(*base, x["dv"], layout, scale, g=x["G"]),
        "+dL/dG (fp32 dv)": lambda: chunk_bwd_dqkwg(*base, x["dv"], layout, scale, g=x["G"], want_dg=True),
        "+dL/dG (bf16 dv)": lambda: chunk_bwd_dqkwg(*base, dv16, layout, scale, g=x["G"], want_dg=True),
    }
    out = []
    for name, fn in variants.items():
        ms = float(do_bench(fn, return_mode="median"))
        out.append({"shape": ",".join(map(str, shape)), "variant": name, "ms": ms})
        print(f"[split_dqkg] {out[-1]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs="*", default=["4,8192,16,128,128"], help="B,T,H,K,V")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    table = []
    for s in args.shape:
        table += rows(tuple(int(v) for v in s.split(",")))
    import triton

    lines = [
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}",
        "",
        "| B,T,H,K,V | variant | ms |",
        "|---|---|---|",
    ] + [f"| {r['shape']} | {r['variant']} | {r['ms']:.3f} |" for r in table]
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
