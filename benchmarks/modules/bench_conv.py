"""Short convolution (causal depthwise conv1d + SiLU) vs PyTorch eager: fwd, fwd+bwd, peak memory (CUDA, bf16).

python -m benchmarks.modules.run_all --only conv
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.modules.common import measure
from fla.modules.conv import causal_conv1d

SHAPES = ((8, 4096, 2048, 4), (8, 4096, 4096, 4))  # (B, T, D, W)
DTYPE = torch.bfloat16


def eager_short_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.conv1d with groups=D, padding W-1 (keep the first T outputs), then SiLU."""
    T, W = x.shape[1], weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=W - 1, groups=x.shape[2])
    return F.silu(y[..., :T]).transpose(1, 2)


def _cases(B: int, T: int, D: int, W: int) -> list[tuple]:
    """``(impl, fwd, leaves)`` for one shape: ours and the eager PyTorch equivalent."""
    x = torch.randn(B, T, D, device="cuda", dtype=DTYPE, requires_grad=True)
    w = torch.randn(D, W, device="cuda", dtype=DTYPE, requires_grad=True)
    b = torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)
    return [
        ("fla", lambda: causal_conv1d(x, w, b, activation="silu")[0], (x, w, b)),
        ("torch", lambda: eager_short_conv(x, w, b), (x, w, b)),
    ]


def rows() -> list[dict]:
    """One row per (shape, impl): fwd ms, fwd+bwd ms, fwd+bwd peak MiB."""
    out = []
    for B, T, D, W in SHAPES:
        for impl, fwd, leaves in _cases(B, T, D, W):
            out.append(measure("short_conv", f"[{B}, {T}, {D}] W={W}", DTYPE, impl, fwd, grad_inputs=leaves))
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
