"""Rotary embedding vs PyTorch eager (cat/split rotate-half): fwd, fwd+bwd, peak memory (CUDA, bf16).

python -m benchmarks.modules.run_all --only rotary
"""

from __future__ import annotations

import torch

from benchmarks.modules.common import measure
from fla.modules.rotary import RotaryEmbedding, rotary_embedding

SHAPES = ((8, 4096, 16, 128), (8, 4096, 32, 128))  # (B, T, H, D)
DTYPE = torch.bfloat16


def eager_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """GPT-NeoX rotary in eager PyTorch: ``x * cos + rotate_half(x) * sin`` with cat/split."""
    T = x.shape[1]
    cos = torch.cat([cos[:T], cos[:T]], -1)[None, :, None, :].to(x.dtype)
    sin = torch.cat([sin[:T], sin[:T]], -1)[None, :, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _cases(B: int, T: int, H: int, D: int) -> list[tuple]:
    """``(impl, fwd, leaves)`` for one rotated tensor ``[B, T, H, D]``: ours and eager PyTorch."""
    cos, sin = RotaryEmbedding(D, device="cuda")._tables(T, torch.device("cuda"))
    x = torch.randn(B, T, H, D, device="cuda", dtype=DTYPE, requires_grad=True)
    return [
        ("fla", lambda: rotary_embedding(x, cos, sin), (x,)),
        ("torch", lambda: eager_rotary(x, cos, sin), (x,)),
    ]


def rows() -> list[dict]:
    """One row per (shape, impl): fwd ms, fwd+bwd ms, fwd+bwd peak MiB."""
    out = []
    for B, T, H, D in SHAPES:
        for impl, fwd, leaves in _cases(B, T, H, D):
            out.append(measure("rotary", f"[{B}, {T}, {H}, {D}]", DTYPE, impl, fwd, grad_inputs=leaves))
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
