"""The step-by-step reference of the selective scan (Mamba's S6), also the CPU path of the public ops.

Per channel ``d`` and state index ``n`` (``x, dt, z [B, T, Di]``, ``A [Di, Ds]``, ``B, C [B, T, Ds]``)::

    dt_t   = softplus(dt_t + dt_bias)           (bias and softplus optional)
    h_t    = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d]
    y_t[d] = sum_n C_t[n] h_t[d, n] + D[d] x_t[d]        (y_t *= silu(z_t) with a gate)

Computed in float32 at least (float64 inputs stay float64, the tests' reference precision); autograd gives
every gradient. Returns ``y`` in ``x``'s dtype and the final state ``[N, Di, Ds]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.ops.utils.varlen import pad_sequences, unpad_sequences


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any input is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def discretize_dt(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool, dtype: torch.dtype):
    """``softplus(dt + dt_bias)`` (each step optional) in ``dtype``."""
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    return F.softplus(dt) if dt_softplus else dt


def finish_output(y, x, D, z, dtype):
    """``(y + D x) * silu(z)`` (each term optional) in ``dtype``."""
    if D is not None:
        y = y + x.to(dtype) * D.to(dtype)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y


def naive_selective_scan(
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
    """Token by token (see the module docstring). Varlen rows are padded to ``[N, T_max, ..]`` with
    ``dt = x = 0`` after each end (the state is unchanged there), so the last state is each sequence's."""
    dtype = compute_dtype(x, dt, A, B, C, D, z, dt_bias, initial_state)
    if cu_seqlens is not None:
        # pad the *discretized* step sizes: a padded token must leave the state alone (dt = 0)
        dts = discretize_dt(dt, dt_bias, dt_softplus, dtype)
        pads = [None if t is None else pad_sequences(t, cu_seqlens) for t in (x, dts, B, C, z)]
        y, ht = naive_selective_scan(
            pads[0], pads[1], A, pads[2], pads[3], D, pads[4], None, False, initial_state, True, None
        )
        return unpad_sequences(y, cu_seqlens), (ht if output_final_state else None)
    Bsz, T, Di = x.shape
    dts = discretize_dt(dt, dt_bias, dt_softplus, dtype)
    xs, As, Bs, Cs = x.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    h = x.new_zeros(Bsz, Di, A.shape[1], dtype=dtype) if initial_state is None else initial_state.to(dtype)
    ys = []
    for t in range(T):
        decay = torch.exp(dts[:, t, :, None] * As)  # [B, Di, Ds]
        h = decay * h + (dts[:, t] * xs[:, t])[:, :, None] * Bs[:, t, None, :]
        ys.append((h * Cs[:, t, None, :]).sum(-1))
    y = torch.stack(ys, 1) if ys else xs.new_zeros(Bsz, 0, Di)
    y = finish_output(y, x, D, z, dtype)
    return y.to(x.dtype), (h if output_final_state else None)
