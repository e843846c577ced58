"""SwiGLU and GatedMLP vs PyTorch eager (``F.silu(g) * u``): fwd, fwd+bwd, peak memory (CUDA, bf16).

python -m benchmarks.modules.run_all --only mlp
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.modules.common import measure
from fla.modules import GatedMLP, swiglu

DTYPE = torch.bfloat16
SWIGLU_SHAPES = ((16384, 2816), (16384, 11008))  # (tokens, intermediate)
MLP_SHAPES = ((8, 2048, 1024), (4, 4096, 2048))  # (B, T, H)


def _swiglu_rows(N: int, I: int) -> list[dict]:
    g = torch.randn(N, I, device="cuda", dtype=DTYPE, requires_grad=True)
    u = torch.randn(N, I, device="cuda", dtype=DTYPE, requires_grad=True)
    shape = f"[{N}, {I}]"
    return [
        measure("swiglu", shape, DTYPE, "fla", lambda: swiglu(g, u), grad_inputs=(g, u)),
        measure("swiglu", shape, DTYPE, "torch", lambda: F.silu(g) * u, grad_inputs=(g, u)),
    ]


def _mlp_rows(B: int, T: int, H: int) -> list[dict]:
    mlp = GatedMLP(H).to("cuda", DTYPE)
    x = torch.randn(B, T, H, device="cuda", dtype=DTYPE, requires_grad=True)
    leaves = (x, *mlp.parameters())
    shape = f"[{B}, {T}, {H}] I={mlp.intermediate_size}"
    out = []
    for impl, fuse in (("fla", True), ("torch", False)):
        mlp.fuse_swiglu = fuse
        out.append(measure("gated_mlp", shape, DTYPE, impl, lambda: mlp(x), grad_inputs=leaves))
    return out


def rows() -> list[dict]:
    """One row per (module, shape, impl): fwd ms, fwd+bwd ms, fwd+bwd peak MiB."""
    out = []
    for N, I in SWIGLU_SHAPES:
        out += _swiglu_rows(N, I)
        torch.cuda.empty_cache()
    for B, T, H in MLP_SHAPES:
        out += _mlp_rows(B, T, H)
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
