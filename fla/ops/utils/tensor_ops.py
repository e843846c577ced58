"""Plain tensor ops of fla 0.6.0's ``fla.ops.utils`` (fla runs them as Triton kernels; here they are PyTorch,
float32 inside): :func:`logsumexp_fwd`, :func:`softmax_fwd` / :func:`softmax_bwd`, :func:`matmul` / :func:`addmm`,
:func:`sinkhorn`, and :func:`softplus`, the one Triton device function (for use inside ``@triton.jit`` kernels,
as in fla).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def softplus(x):
    """``log(1 + exp(x))`` inside a Triton kernel, without overflow and accurate for very negative ``x`` (``log1p``
    by the ratio ``log(u) e / (u - 1)``, ``u = 1 + e`` rounded: exact to float32 rounding). Also the selective
    scan's ``dt`` softplus (:mod:`fla.ops.mamba.scan`)."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    return tl.maximum(x, 0.0) + lp


def _f32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 at least (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def logsumexp_fwd(x: torch.Tensor, scale: float | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``log(sum(exp(scale * x)))`` over the last dimension: ``[..., D]`` -> ``[...]``, float32 (or ``dtype``)."""
    if x.dim() < 1:
        raise ValueError(f"x has shape {list(x.shape)}, expected [..., D]")
    z = x.float() if scale is None else x.float() * scale
    return z.logsumexp(-1).to(dtype or torch.float)


def softmax_fwd(x: torch.Tensor, dtype: torch.dtype | None = torch.float) -> torch.Tensor:
    """Softmax over the last dimension of ``x [..., D]``; ``dtype`` ``None`` keeps ``x``'s."""
    if x.dim() < 1:
        raise ValueError(f"x has shape {list(x.shape)}, expected [..., D]")
    return _f32(x).softmax(-1).to(dtype or x.dtype)


def softmax_bwd(p: torch.Tensor, dp: torch.Tensor, dtype: torch.dtype | None = torch.float) -> torch.Tensor:
    """Gradient through a softmax: ``ds = p * (dp - sum(p * dp))`` over the last dimension, from the softmax
    output ``p [..., D]`` and its gradient ``dp``; ``dtype`` ``None`` keeps ``p``'s."""
    if p.shape != dp.shape or p.dim() < 1:
        raise ValueError(f"p has shape {list(p.shape)} and dp {list(dp.shape)}, expected the same [..., D]")
    p32, dp32 = _f32(p), _f32(dp)
    return (p32 * (dp32 - (p32 * dp32).sum(-1, keepdim=True))).to(dtype or p.dtype)


_ACTIVATIONS = {
    "": lambda c: c,
    "relu": torch.relu,
    "leaky_relu": lambda c: torch.nn.functional.leaky_relu(c, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def _check_mm(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() not in (2, 3) or b.dim() != 2 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"a has shape {list(a.shape)} and b {list(b.shape)}, expected a [(B,) M, K] and b [K, N]")


def matmul(a: torch.Tensor, b: torch.Tensor, activation: str | None = "") -> torch.Tensor:
    """``activation(a @ b)``, float32 accumulation, in ``a``'s dtype.

    Args:
        a: ``[M, K]`` or ``[B, M, K]``; b: ``[K, N]``.
        activation: ``""``/``None`` (none), ``"relu"``, ``"leaky_relu"`` (slope 0.01), ``"sigmoid"`` or ``"tanh"``.
    """
    _check_mm(a, b)
    if (activation or "") not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation or ""](_f32(a) @ _f32(b)).to(a.dtype)


def addmm(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    beta: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * (a @ b) + beta * x`` (a missing ``alpha`` / ``beta`` is 1), float32 inside, in ``a``'s dtype.

    Args:
        x: ``[N]`` (added to every row) or ``[M, N]`` (to every batch of ``a``); a: ``[M, K]`` or ``[B, M, K]``;
            b: ``[K, N]``; alpha, beta: numbers or one-element tensors (fla passes tensors).
    """
    _check_mm(a, b)
    M, N = a.shape[-2], b.shape[1]
    if x.shape not in ((N,), (M, N)):
        raise ValueError(f"x has shape {list(x.shape)}, expected [{N}] or [{M}, {N}]")
    c = _f32(a) @ _f32(b)
    if alpha is not None:
        c = c * alpha
    x = _f32(x) if beta is None else _f32(x) * beta
    return (c + x).to(a.dtype)


def sinkhorn(logits: torch.Tensor, num_iters: int = 20) -> torch.Tensor:
    """Sinkhorn normalization of square matrices ``[..., N, N]``: ``num_iters`` rounds of normalizing the columns,
    then the rows, to sum to 1 (in log space), float32. Differentiable.

    Returns:
        ``exp`` of the normalized logits, float32 ``[..., N, N]`` (rows sum to 1; columns approach 1).
    """
    if logits.dim() < 2 or logits.shape[-1] != logits.shape[-2] or logits.shape[-1] < 1:
        raise ValueError(f"logits has shape {list(logits.shape)}, expected [..., N, N] with N >= 1")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    x = logits.float()
    for _ in range(num_iters):
        x = x - x.logsumexp(-2, keepdim=True)  # columns
        x = x - x.logsumexp(-1, keepdim=True)  # rows
    return x.exp()
