"""Argument checks and the SSD -> simple-GLA mapping shared by the Mamba2 SSD ops.

Mamba2's SSD layer per head ``h`` (group ``g = h // (H / G)``), with ``S_t`` the ``[N, P]`` state::

    dt_t = clamp(softplus(dt_t + dt_bias_h), *dt_limit)
    S_t  = exp(A_h dt_t) S_{t-1} + B_{t,g}^T (dt_t x_t),      A_h = -exp(A_log_h)
    y_t  = C_{t,g} S_t + D_h x_t

is scalar-decay linear attention (simple GLA) with ``q = C``, ``k = B`` (each group's row repeated
for its heads), ``v = x * dt``, log decay ``g = A * dt`` and scale 1, plus the ``D`` skip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fla.ops.mamba2.ssd_io import ssd_inputs_triton, ssd_skip_triton
from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape
from fla.utils.backend import dispatch

DEFAULT_DT_LIMIT = (0.0, math.inf)


def check_ssd_inputs(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_limit: tuple[float, float],
    cu_seqlens: torch.Tensor | None,
    initial_state: torch.Tensor | None = None,
) -> None:
    """Validate the SSD op's inputs (raises before any kernel runs; errors name the argument).

    Shapes: x ``[B, T, H, P]``, dt ``[B, T, H]``, A_log ``[H]``, B and C ``[B, T, G, N]`` with ``H`` a
    multiple of ``G``, D ``[H]`` or ``[H, P]``, dt_bias ``[H]``, cu_seqlens ``[S+1]`` (then ``B == 1``),
    initial_state ``[S, H, N, P]`` (``S`` = B, or the number of packed sequences).
    """
    if x.dim() != 4:
        raise ValueError(f"x has shape {list(x.shape)}, expected 4 dims [B, T, H, P]")
    batch, T, H, P = x.shape
    check_shape("dt", dt, (batch, T, H), "[B, T, H]")
    check_shape("A_log", A_log, (H,), "[H]")
    if B.dim() != 4:
        raise ValueError(f"B has shape {list(B.shape)}, expected 4 dims [B, T, G, N]")
    G, N = B.shape[2], B.shape[3]
    check_shape("B", B, (batch, T, G, N), "[B, T, G, N]")
    check_shape("C", C, (batch, T, G, N), "[B, T, G, N] (as B)")
    if G == 0 or H % G != 0:
        raise ValueError(f"x has H={H} heads, which is not a multiple of the G={G} groups of B and C")
    if D is not None and D.shape not in ((H,), (H, P)):
        raise ValueError(f"D has shape {list(D.shape)}, expected [{H}] or [{H}, {P}] ([H] or [H, P])")
    if dt_bias is not None:
        check_shape("dt_bias", dt_bias, (H,), "[H]")
    for name, t in (("x", x), ("dt", dt), ("A_log", A_log), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            check_dtype(name, t)
    for name, t in (("B", B), ("C", C)):
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has dtype {x.dtype}; x, B and C must share one dtype")
    if len(dt_limit) != 2 or not dt_limit[0] <= dt_limit[1]:
        raise ValueError(f"dt_limit={tuple(dt_limit)!r} must be a (low, high) pair with low <= high")
    check_same_device(x=x, dt=dt, A_log=A_log, B=B, C=C, D=D, dt_bias=dt_bias, initial_state=initial_state)
    check_cu_seqlens(cu_seqlens, total=T, batch=batch)
    if initial_state is not None:
        S = batch if cu_seqlens is None else cu_seqlens.numel() - 1
        check_shape("initial_state", initial_state, (S, H, N, P), "[S, H, N, P]")
        check_dtype("initial_state", initial_state)


def discretize(
    dt: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None, dt_limit: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dt, g)`` ``[B, T, H]``: the step ``clamp(softplus(dt + dt_bias), *dt_limit)`` and the log decay
    ``-exp(A_log) * dt``, in float32 at least (float64 stays float64). Differentiable in every input."""
    dtype = torch.promote_types(dt.dtype, torch.float32)
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    dt = F.softplus(dt)
    if tuple(dt_limit) != DEFAULT_DT_LIMIT:  # softplus > 0 already: the default limits are a no-op
        dt = dt.clamp(dt_limit[0], dt_limit[1])
    return dt, -A_log.to(dtype).exp() * dt


def ssd_as_gla(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_limit: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The simple-GLA inputs of an SSD call for the PyTorch chunk form and the decode path: ``q = C``, ``k = B``
    (repeated to ``[B, T, H, N]``, autograd summing their gradients back; the chunked Triton path reads groups
    directly, :class:`fla.ops.mamba2.chunk.ChunkSSDFunction`), ``v = x * dt`` ``[B, T, H, P]`` in ``x.dtype``
    and the log decay ``g = A * dt`` ``[B, T, H]`` float32 (float64 for float64 inputs); on the Triton path
    ``v`` and ``g`` come from one fused pass each way (:mod:`fla.ops.mamba2.ssd_io`)."""
    repeats = x.shape[2] // B.shape[2]
    q, k = (t if repeats == 1 else t.repeat_interleave(repeats, dim=2) for t in (C, B))
    v, g = dispatch((x, dt, A_log, dt_bias), _inputs_torch, ssd_inputs_triton, x, dt, A_log, dt_bias, dt_limit)
    return q, k, v, g


def _inputs_torch(x, dt, A_log, dt_bias, dt_limit) -> tuple[torch.Tensor, torch.Tensor]:
    dt, g = discretize(dt, A_log, dt_bias, dt_limit)
    return (x.to(dt.dtype) * dt[..., None]).to(x.dtype), g


def d_skip(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """``y + D x`` (``D [H]`` per head or ``[H, P]`` per channel; ``None``: no skip) in ``x.dtype``; one fused
    pass each way on the Triton path (:mod:`fla.ops.mamba2.ssd_io`)."""
    if D is None:
        return y.to(x.dtype)
    return dispatch((y, x, D), _d_skip_torch, ssd_skip_triton, y, x, D)


def _d_skip_torch(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    dtype = torch.promote_types(y.dtype, torch.float32)
    Dx = (D[:, None] if D.dim() == 1 else D).to(dtype) * x.to(dtype)
    return (y.to(dtype) + Dx).to(x.dtype)
