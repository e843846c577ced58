"""The selective scan by chunks: the training path (sequence-first layout)."""

from __future__ import annotations

import os

import torch

from fla.ops.mamba.inputs import check_selective_scan_inputs
from fla.ops.mamba.naive import naive_selective_scan
from fla.ops.mamba.scan import chunk_selective_scan_bwd, chunk_selective_scan_fwd, layout_for
from fla.ops.mamba.scan_sequential import sequential_selective_scan_bwd, sequential_selective_scan_fwd, use_sequential
from fla.utils import contiguous
from fla.utils.backend import dispatch

_PATHS = ("auto", "sequential", "chunk")
# the path without FLA_MAMBA_SCAN: the chunk-parallel stages until the one pass has been timed on a GPU against
# them (benchmarks/results/ops_ssm.md, `python -m benchmarks.ops.bench_ssm --scan-only`); then "auto"
DEFAULT_PATH = "chunk"


def scan_passes(layout, Di: int):
    """``(forward, backward)`` of the selective scan's Triton path: one pass per direction
    (:mod:`fla.ops.mamba.scan_sequential`) when there are enough sequences x channel blocks to fill the GPU,
    else the chunk-parallel stages (:mod:`fla.ops.mamba.scan`). ``FLA_MAMBA_SCAN`` = ``auto`` | ``sequential``
    | ``chunk`` chooses (read at each call; unset: :data:`DEFAULT_PATH`)."""
    name = os.environ.get("FLA_MAMBA_SCAN") or DEFAULT_PATH
    if name not in _PATHS:
        raise ValueError(f"FLA_MAMBA_SCAN={name!r} is not one of {_PATHS}")
    if name == "sequential" or (name == "auto" and use_sequential(layout, Di)):
        return sequential_selective_scan_fwd, sequential_selective_scan_bwd
    return chunk_selective_scan_fwd, chunk_selective_scan_bwd


class ChunkSelectiveScanFunction(torch.autograd.Function):
    """``out_t = (C_t . h_t + D x_t) silu(z_t)`` of ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``,
    ``dt = softplus(dt + dt_bias)``, and the final state, on the Triton path :func:`scan_passes` picks
    (discretization and epilogue fused; ``D, z, dt_bias`` may be ``None``)."""

    @staticmethod
    @contiguous
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens):
        layout = layout_for(x, cu_seqlens)
        fwd, ctx.bwd = scan_passes(layout, x.shape[-1])
        y, ht, h_in = fwd(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, layout)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, h_in, initial_state)
        ctx.layout, ctx.dt_softplus = layout, dt_softplus
        return y, ht

    @staticmethod
    @contiguous
    def backward(ctx, dy, dht):
        x, dt, A, B, C, D, z, dt_bias, h_in, initial_state = ctx.saved_tensors
        dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dh0 = ctx.bwd(
            x, dt, A, B, C, D, z, dt_bias, ctx.dt_softplus, h_in, dy, dht, initial_state is not None, ctx.layout
        )

        def cast(g, t):
            return None if g is None else g.to(t.dtype)

        return (
            dx,
            ddt,
            cast(dA, A),
            cast(dB, B),
            cast(dC, C),
            cast(dD, D),
            dz,
            cast(ddt_bias, dt_bias),
            None,
            cast(dh0, initial_state),
            None,
            None,
        )


def chunk_scan_triton(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens):
    """:func:`chunk_selective_scan` on the chunk kernels (inputs already checked)."""
    y, ht = ChunkSelectiveScanFunction.apply(
        x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens
    )
    return y, (ht if output_final_state else None)


def chunk_selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Mamba's selective scan, sequence-first, by chunks (see README.md)::

        dt_t = softplus(dt_t + dt_bias);  h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t;  y_t = (C_t . h_t + D x_t) silu(z_t)

    Args:
        x: inputs ``[B, T, Di]``; dt: step sizes ``[B, T, Di]`` (before ``dt_bias`` / softplus).
        A: ``[Di, Ds]`` (negative: ``-exp(A_log)``), ``Ds <= 64``; B, C: ``[B, T, Ds]``.
        D: skip weights ``[Di]``; z: gate ``[B, T, Di]``; dt_bias: ``[Di]``; dt_softplus: apply softplus.
        initial_state: ``[N, Di, Ds]``; output_final_state: also return the final state ``[N, Di, Ds]`` float32.
        cu_seqlens: ``[N+1]`` bounds of packed sequences (then ``B == 1``).
    Returns:
        ``y [B, T, Di]`` (``x.dtype``) and the final state or ``None``. Every input gets its gradient.
    """
    check_selective_scan_inputs(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens)
    return dispatch(
        (x, dt, A, B, C, D, z, dt_bias, initial_state), naive_selective_scan, chunk_scan_triton,
        x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens,
    )  # fmt: skip
