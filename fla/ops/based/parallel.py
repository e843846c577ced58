"""``parallel_based``: Based linear attention (fla 0.6.0's parallel API)."""

import torch

from fla.ops.based.common import based_attention


def parallel_based(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    use_norm: bool = True,
) -> torch.Tensor:
    """Based: ``o_i = sum_{j <= i} (1 + s_ij + s_ij^2 / 2) v_j``, ``s_ij = scale * q_i . k_j``, divided by
    ``sum_{j <= i} (1 + s_ij + s_ij^2 / 2) + 1e-6`` when ``use_norm``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; scale: default ``K ** -0.5``; use_norm: normalize.
    Returns:
        o ``[B, T, H, V]`` in ``q.dtype`` (fla returns the output alone, no state).
    """
    return based_attention(q, k, v, scale, use_norm, "parallel_based")


__all__ = ["parallel_based"]
