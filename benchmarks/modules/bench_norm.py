"""Fused norms vs PyTorch eager: fwd, fwd+bwd time and peak memory (CUDA, bf16).

python -m benchmarks.modules.run_all --only norm

Every leaf that requires grad, the parameters included, is in its case's ``leaves``: each fwd+bwd
starts from ``.grad = None`` on both sides. At [16384, 2048] the fla rows can be host-bound (Python
launch + autograd overhead > device time): do_bench then times the host, not the kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.modules.common import measure
from fla.modules.gated_norm import rms_norm_gated
from fla.modules.norm import layer_norm, rms_norm

SHAPES = ((16384, 2048), (16384, 4096))
DTYPE = torch.bfloat16


def _inputs(N: int, D: int, n: int) -> list[torch.Tensor]:
    return [torch.randn(N, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(n)]


def _params(D: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)
    return w, torch.randn(D, device="cuda", dtype=DTYPE, requires_grad=True)


def _cases(N: int, D: int) -> list[tuple]:
    """``(module, impl, fwd, leaves)`` for one shape: ours and the eager PyTorch equivalent."""
    x, r, g = _inputs(N, D, 3)
    w, b = _params(D)

    def eager_rms_residual():
        h = x + r
        return F.rms_norm(h, (D,), w, 1e-5), h

    return [
        ("rms_norm", "fla", lambda: rms_norm(x, w, None), (x, w)),
        ("rms_norm", "torch", lambda: F.rms_norm(x, (D,), w, 1e-5), (x, w)),
        ("rms_norm+residual", "fla", lambda: rms_norm(x, w, None, residual=r, prenorm=True), (x, r, w)),
        ("rms_norm+residual", "torch", eager_rms_residual, (x, r, w)),
        ("layer_norm", "fla", lambda: layer_norm(x, w, b), (x, w, b)),
        ("layer_norm", "torch", lambda: F.layer_norm(x, (D,), w, b, 1e-5), (x, w, b)),
        ("rms_norm_gated", "fla", lambda: rms_norm_gated(x, g, w), (x, g, w)),
        ("rms_norm_gated", "torch", lambda: F.rms_norm(x, (D,), w, 1e-5) * F.silu(g), (x, g, w)),
    ]


def rows() -> list[dict]:
    """One row per (shape, module, impl): fwd ms, fwd+bwd ms, fwd+bwd peak MiB."""
    out = []
    for N, D in SHAPES:
        for module, impl, fwd, leaves in _cases(N, D):
            out.append(measure(module, f"[{N}, {D}]", DTYPE, impl, fwd, grad_inputs=leaves))
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    for row in rows():
        print(row)
