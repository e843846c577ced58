"""Gated DeltaProduct as the gated delta rule over ``n * T`` micro-steps (token ``t``'s Householder step ``j`` is
micro-step ``t * n + j``): the layout helpers and the argument checks."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_shape


def check_product_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor | None,
    num_householder: int,
    cu_seqlens: torch.Tensor | None,
) -> None:
    """Shapes per token vs per micro-step, before any kernel: q ``[B, T, H, K]``, k ``[B, T*n, H, K]``,
    v ``[B, T*n, HV, V]``, beta ``[B, T*n, HV]``, g ``[B, T, HV]``, cu_seqlens over the ``T`` tokens.
    (The micro-step sequence itself is checked by the gated delta rule.)"""
    if isinstance(num_householder, bool) or not isinstance(num_householder, int) or num_householder < 1:
        raise ValueError(f"num_householder must be an int >= 1, got {num_householder!r}")
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, T, H, K]")
    B, T, H, K = q.shape
    n = num_householder
    check_shape("k", k, (B, T * n, H, K), f"[B, T * num_householder, H, K] (num_householder = {n})")
    check_shape("v", v, (B, T * n, None, None), f"[B, T * num_householder, HV, V] (num_householder = {n})")
    HV = v.shape[2]
    if beta is not None:
        check_shape("beta", beta, (B, T * n, HV), f"[B, T * num_householder, HV] (num_householder = {n})")
    if g is not None:
        check_shape("g", g, (B, T, HV), "[B, T, HV] (one decay per token)")
        check_dtype("g", g)
    check_cu_seqlens(cu_seqlens, total=T, batch=B)


def micro_queries(q: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, T, H, K] -> [B, T*n, H, K]``: the query at each token's last micro-step, zeros before it."""
    if n == 1:
        return q
    B, T, H, K = q.shape
    return torch.cat([q.new_zeros(B, T, n - 1, H, K), q[:, :, None]], 2).flatten(1, 2)


def micro_gates(g: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``[B, T, H] -> [B, T*n, H]``: the token's log decay at its first micro-step, zeros after it."""
    if g is None or n == 1:
        return g
    B, T, H = g.shape
    return torch.cat([g[:, :, None], g.new_zeros(B, T, n - 1, H)], 2).flatten(1, 2)


def token_outputs(o: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, T*n, H, V] -> [B, T, H, V]``: the output each token reads at its last micro-step."""
    return o if n == 1 else o.unflatten(1, (o.shape[1] // n, n))[:, :, -1]


def micro_cu_seqlens(cu_seqlens: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Sequence bounds over the micro-steps (``n`` per token)."""
    return None if cu_seqlens is None else cu_seqlens * n
