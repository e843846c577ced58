"""Mamba2 SSD in plain PyTorch: the token-by-token reference and the chunked CPU form.

:func:`naive_recurrent_mamba2_ssd` follows the state-space recurrence literally (per token: discretize,
decay, add ``dt B^T x``, read out with ``C``, add ``D x``); it does not go through the simple-GLA
mapping, so the tests compare the mapped ops with an independent formula.
"""

from __future__ import annotations

import torch

from fla.ops.mamba2.inputs import DEFAULT_DT_LIMIT, check_ssd_inputs, d_skip, discretize, ssd_as_gla
from fla.ops.simple_gla.naive import naive_chunk_simple_gla


def naive_recurrent_mamba2_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step-by-step SSD (the reference; float64 inputs give float64 results). Arguments as
    :func:`fla.ops.mamba2.chunk_mamba2_ssd`.

    Returns:
        ``y`` ``[B, T, H, P]`` (float32 at least) and the final state ``[S, H, N, P]`` or ``None``.
    """
    check_ssd_inputs(x, dt, A_log, B, C, D, dt_bias, dt_limit, cu_seqlens, initial_state)
    batch, T, H, P = x.shape
    G, N = B.shape[2:]
    dtype = torch.promote_types(x.dtype, torch.float32)
    dt, _ = discretize(dt, A_log, dt_bias, dt_limit)
    dt = dt.to(dtype)
    A = -A_log.to(dtype).exp()  # [H]
    heads_of = torch.arange(H, device=x.device) // (H // G)  # group of each head
    xs, Bs, Cs = x.to(dtype), B.to(dtype)[:, :, heads_of], C.to(dtype)[:, :, heads_of]  # [B, T, H, *]
    if cu_seqlens is None:
        spans = [(b, 0, T) for b in range(batch)]
    else:
        bounds = cu_seqlens.tolist()
        spans = [(0, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    y = xs.new_zeros(batch, T, H, P)
    finals = []
    for n, (b, start, end) in enumerate(spans):
        S = xs.new_zeros(H, N, P) if initial_state is None else initial_state[n].to(dtype)
        for t in range(start, end):
            decay = (A * dt[b, t]).exp()  # [H]
            S = decay[:, None, None] * S + dt[b, t][:, None, None] * Bs[b, t][:, :, None] * xs[b, t][:, None, :]
            y[b, t] = torch.einsum("hn,hnp->hp", Cs[b, t], S)
        finals.append(S)
    y = y if D is None else y + (D[:, None] if D.dim() == 1 else D).to(dtype) * xs
    return y, torch.stack(finals) if output_final_state else None


def naive_chunk_mamba2_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked SSD in PyTorch through the simple-GLA chunked form (what :func:`fla.ops.mamba2.chunk_mamba2_ssd`
    runs on CPU tensors). Arguments and results as there."""
    check_ssd_inputs(x, dt, A_log, B, C, D, dt_bias, dt_limit, cu_seqlens, initial_state)
    q, k, v, g = ssd_as_gla(x, dt, A_log, B, C, dt_bias, dt_limit)
    y, final_state = naive_chunk_simple_gla(q, k, v, g, None, 1.0, initial_state, output_final_state, cu_seqlens)
    return d_skip(y, x, D), final_state
