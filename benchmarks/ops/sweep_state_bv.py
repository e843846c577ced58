"""The delta rule's state-recurrence kernels against their V block width, CUDA only.

``fla.ops.delta_rule.chunk_h`` gives each (sequence, head, V block) program the whole key dim and a
``BV``-wide slice of the state (:func:`~fla.ops.delta_rule.chunk_h.state_blocks` picks it). With few
(sequence, head) pairs the grid is a wave and a half of the GPU's multiprocessors, so the width
decides how many programs wait for a second wave. This times ``chunk_delta_fwd_h`` and
``chunk_delta_bwd_dh`` (do_bench medians, ms) for each forced ``BV`` next to the default choice, and
``chunk_gated_delta_rule`` fwd+bwd with each:

    python -m benchmarks.ops.sweep_state_bv --shape 8,2048,6,128,256 4,8192,16,128,128 --out sweep.md
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from benchmarks.report import emit


def _inputs(B: int, T: int, H: int, K: int, V: int) -> dict[str, torch.Tensor]:
    dev, dt = "cuda", torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape, dtype=dt):
        return torch.randn(*shape, device=dev, dtype=torch.float32, generator=gen).to(dtype)

    return {
        "q": rand(B, T, H, K),
        "k": F.normalize(rand(B, T, H, K, dtype=torch.float32), dim=-1).to(dt),
        "v": rand(B, T, H, V),
        "g": (F.logsigmoid(rand(B, T, H, dtype=torch.float32)) / 8),
        "beta": rand(B, T, H, dtype=torch.float32).sigmoid().to(dt),
    }


def sweep(shape: tuple[int, int, int, int, int], widths: list[int]) -> list[dict]:
    """Rows ``{shape, BV, fwd_h_ms, bwd_dh_ms, op_fwd_bwd_ms}`` for the default choice and each width."""
    import triton

    from fla.ops import chunk_gated_delta_rule
    from fla.ops.common.layout import ChunkLayout
    from fla.ops.delta_rule import chunk_h

    B, T, H, K, V = shape
    x = _inputs(B, T, H, K, V)
    layout = ChunkLayout.build(x["k"], None, 64)
    w = x["k"].clone()
    G = torch.cumsum(x["g"].view(B, -1, 64, H), 2).view(B, T, H) if T % 64 == 0 else None
    do = torch.randn_like(x["v"])
    dv = torch.randn(B, T, H, V, device="cuda", dtype=torch.float32)
    default = chunk_h.state_blocks
    leaves = {n: t.detach().clone().requires_grad_() for n, t in x.items()}

    def op():
        o, _ = chunk_gated_delta_rule(**leaves, scale=K**-0.5)
        o.backward(do)

    rows = []
    for width in [None, *widths]:
        if width is not None:
            chunk_h.state_blocks = lambda K_, V_, programs, device, bv=width: (default(K_, V_, programs, device)[0], bv)
        try:
            BV = chunk_h.state_blocks(K, V, layout.num_seqs * H, torch.device("cuda"))[1]
            fwd = triton.testing.do_bench(lambda: chunk_h.chunk_delta_fwd_h(x["k"], w, x["v"], layout, G))
            bwd = triton.testing.do_bench(
                lambda: chunk_h.chunk_delta_bwd_dh(x["q"], x["k"], w, do, dv, layout, K**-0.5, G)
            )
            full = triton.testing.do_bench(op, grad_to_none=list(leaves.values()))
        finally:
            chunk_h.state_blocks = default
        label = f"{BV} (default)" if width is None else str(BV)
        rows.append({"shape": "x".join(map(str, shape)), "BV": label, "fwd_h_ms": round(fwd, 4),
                     "bwd_dh_ms": round(bwd, 4), "op_fwd_bwd_ms": round(full, 4)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse ``--shape B,T,H,K,V ...``, ``--widths``, ``--out``; print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="+", default=["8,2048,6,128,256", "4,8192,16,128,128"])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device (the kernels' grid is what is measured)")
    rows = []
    for text in args.shape:
        shape = tuple(int(v) for v in text.split(","))
        if len(shape) != 5:
            parser.error(f"--shape {text!r}: expected B,T,H,K,V")
        rows += sweep(shape, args.widths)
    import triton

    cols = ["shape", "BV", "fwd_h_ms", "bwd_dh_ms", "op_fwd_bwd_ms"]
    head = f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__}"
    table = [f"{head} | python {platform.python_version()}", ""]
    table += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    emit("\n".join(table) + "\n", args.out)
    return rows


if __name__ == "__main__":
    main()
