"""``parallel_rebased``: ReBased attention, squared scores (fla 0.6.0's op name and signature)."""

from __future__ import annotations

import torch

from fla.ops.based.common import check_based_inputs, feature_attention


def quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """``x [..., K]`` -> ``[diag(x x^T), sqrt(2) triu_1(x x^T)]`` ``[..., K (K + 1) / 2]``, so that
    ``phi(x) . phi(y) = (x . y)^2``."""
    # Imported here: fla.modules imports fla.ops (a module-level import would be circular).
    from fla.modules.feature_map import flatten_diag_outer_product_off1

    off, diag = flatten_diag_outer_product_off1(x, x)
    return torch.cat([diag, off * 2**0.5], dim=-1)


def parallel_rebased(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eps: float = 1e-5,
    use_scale: bool = True,
    use_normalize: bool = True,
    return_both: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ReBased: ``o_i = sum_{j <= i} s_ij^2 v_j``, ``s_ij = scale * q_i . k_j`` (``scale = K ** -0.5`` with
    ``use_scale``, else 1), divided by ``z_i + eps`` (``z_i = sum_{j <= i} s_ij^2``) with ``use_normalize``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        eps: added to the normalizer; use_scale, use_normalize: as above.
        return_both: return the unnormalized ``o`` and ``z`` instead, in fla 0.6.0's layout.
    Returns:
        ``o [B, T, H, V]`` in ``q.dtype``; with ``return_both``, ``(o [B, H, T, V], z [B, H, T])`` in ``q.dtype``.
    """
    check_based_inputs(q, k, v, True, "parallel_rebased")
    for name, flag in (("use_scale", use_scale), ("use_normalize", use_normalize), ("return_both", return_both)):
        if not isinstance(flag, bool):
            raise ValueError(f"parallel_rebased: {name} must be a bool, got {flag!r}")
    scale = q.shape[-1] ** -0.5 if use_scale else 1.0
    o, z = feature_attention(quadratic_features(q * scale), quadratic_features(k), v, True)
    if return_both:
        return o.transpose(1, 2).to(q.dtype), z.transpose(1, 2).to(q.dtype)
    if use_normalize:
        o = o / (z[..., None] + eps)
    return o.to(q.dtype)


__all__ = ["parallel_rebased", "quadratic_features"]
