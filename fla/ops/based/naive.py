"""Based in its quadratic form (the float64 reference)."""

import torch


def naive_parallel_based(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, use_norm: bool = True
) -> torch.Tensor:
    """q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` -> o ``[B, T, H, V]``: the causal weights
    ``w_ij = 1 + s + s^2 / 2`` (``s = scale * q_i . k_j``) applied to v, normalized by ``sum_j w_ij + 1e-6``."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    s = torch.einsum("bihk,bjhk->bhij", q, k) * scale
    T = q.shape[1]
    w = (1 + s + s * s / 2).masked_fill(~torch.ones(T, T, dtype=torch.bool, device=q.device).tril(), 0)
    o = torch.einsum("bhij,bjhv->bihv", w, v)
    if use_norm:
        o = o / (w.sum(-1).transpose(1, 2).unsqueeze(-1) + 1e-6)
    return o


__all__ = ["naive_parallel_based"]
