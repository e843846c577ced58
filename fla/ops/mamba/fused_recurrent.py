"""The selective scan token by token: the decoding path (and ``selective_state_update``, one token)."""

from __future__ import annotations

import torch

from fla.ops.mamba.chunk import chunk_scan_triton
from fla.ops.mamba.inputs import check_selective_scan_inputs
from fla.ops.mamba.naive import compute_dtype, discretize_dt, finish_output, naive_selective_scan
from fla.ops.mamba.scan import fused_recurrent_selective_scan_fwd
from fla.utils.backend import dispatch


def _recurrent_triton(x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens):
    inputs = (x, dt, A, B, C, D, z, dt_bias, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        # a gradient is wanted: the chunk kernels compute the same maths and have a backward
        args = (x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens)
        return chunk_scan_triton(*args)
    dtype = compute_dtype(x, dt, A, B, C, D, z, dt_bias, initial_state)
    dts = discretize_dt(dt, dt_bias, dt_softplus, dtype)
    args = [t.contiguous() if t is not None else None for t in (x, dts, A, B, C, initial_state)]
    y, ht = fused_recurrent_selective_scan_fwd(*args, output_final_state, cu_seqlens)
    y = finish_output(y, x, D, z, dtype)
    return y.to(x.dtype), (ht if output_final_state else None)


def fused_recurrent_selective_scan(
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
    """:func:`~fla.ops.mamba.chunk_selective_scan`'s maths and arguments, one token at a time (one Triton
    program per sequence and channel block keeps a ``[BD, Ds]`` float32 state). With a gradient to compute it
    runs the chunk kernels, which have the backward. Returns ``y [B, T, Di]`` and the final state or ``None``."""
    check_selective_scan_inputs(x, dt, A, B, C, D, z, dt_bias, initial_state, cu_seqlens)
    return dispatch(
        (x, dt, A, B, C, D, z, dt_bias, initial_state), naive_selective_scan, _recurrent_triton,
        x, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, output_final_state, cu_seqlens,
    )  # fmt: skip
