"""Fused (linear) cross-entropy vs PyTorch: fwd, fwd+bwd, peak memory (CUDA, bf16).

* FusedCrossEntropyLoss vs ``F.cross_entropy`` on fp32-upcast logits.
* FusedLinearCrossEntropyLoss vs ``x @ W.T -> F.cross_entropy`` (bf16 logits, and fp32-upcast logits).
  Goals at N=16384, H=1024, V=32000: peak <= 25% of the unfused one, time <= 1.2x.

python -m benchmarks.modules.run_all --only cross_entropy
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.modules.common import measure
from fla.modules import cross_entropy_loss, linear_cross_entropy
from fla.utils import IGNORE_INDEX

DTYPE = torch.bfloat16
N, H, V = 16384, 1024, 32000


def _target() -> torch.Tensor:
    target = torch.randint(0, V, (N,), device="cuda")
    target[::50] = IGNORE_INDEX  # a few ignored positions, as with padding
    return target


def _ce_rows() -> list[dict]:
    logits = torch.randn(N, V, device="cuda", dtype=DTYPE, requires_grad=True)
    target = _target()
    shape = f"[{N}, {V}]"
    return [
        measure("cross_entropy", shape, DTYPE, "fla", lambda: cross_entropy_loss(logits, target), (logits,)),
        measure(
            "cross_entropy", shape, DTYPE, "torch fp32", lambda: F.cross_entropy(logits.float(), target), (logits,)
        ),
    ]


def _linear_ce_rows() -> list[dict]:
    x = torch.randn(N, H, device="cuda", dtype=DTYPE, requires_grad=True)
    w = (torch.randn(V, H, device="cuda") / H**0.5).to(DTYPE).requires_grad_()
    target = _target()
    shape = f"N={N} H={H} V={V}"
    cases = (
        ("fla", lambda: linear_cross_entropy(x, target, w)),
        ("torch", lambda: F.cross_entropy(x @ w.t(), target)),
        ("torch fp32", lambda: F.cross_entropy((x @ w.t()).float(), target)),
    )
    return [measure("linear_cross_entropy", shape, DTYPE, impl, fwd, (x, w)) for impl, fwd in cases]


def rows() -> list[dict]:
    """One row per (module, impl): fwd ms, fwd+bwd ms, fwd+bwd peak MiB."""
    out = _ce_rows()
    torch.cuda.empty_cache()
    out += _linear_ce_rows()
    torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
