"""Based attention through the Taylor feature map and chunked linear attention (no kernel of its own)."""

import torch

from fla.ops.simple_gla.chunk import chunk_simple_gla


def check_based_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_norm: bool, name: str) -> None:
    """q, k ``[B, T, H, K]`` of one shape, v ``[B, T, H, V]``, floating point, ``use_norm`` a bool."""
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(
            f"{name}: q and k must be [B, T, H, K] of one shape, got q {tuple(q.shape)} k {tuple(k.shape)}"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{name}: v must be [B, T, H, V] with q's [B, T, H] {tuple(q.shape[:3])}, got {tuple(v.shape)}"
        )
    if not (q.is_floating_point() and k.is_floating_point() and v.is_floating_point()):
        raise ValueError(f"{name}: q, k, v must be floating point, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(use_norm, bool):
        raise ValueError(f"{name}: use_norm must be a bool, got {use_norm!r}")


def based_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, use_norm: bool, name: str
) -> torch.Tensor:
    """``o_i = sum_{j <= i} w_ij v_j`` (``/ (sum_{j <= i} w_ij + 1e-6)`` with ``use_norm``),
    ``w_ij = 1 + s_ij + s_ij^2 / 2``, ``s_ij = scale * q_i . k_j``.

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]`` -> o ``[B, T, H, V]`` (``q.dtype``). Runs ungated linear attention
    over ``1 + K + K (K + 1) / 2`` Taylor features; a ones column appended to v yields the normalizer."""
    check_based_inputs(q, k, v, use_norm, name)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    # phi(x) = [1, x, diag(x x^T) / sqrt(2), triu_1(x x^T)] (TaylorFeatureMap with d = 1), so that
    # phi(q') . phi(k) = 1 + s + s^2 / 2 with s = q' . k; the query scale is folded into q' = scale * q.
    # Imported here: fla.modules imports fla.ops (a module-level import would be circular).
    from fla.modules.feature_map import TaylorFeatureMap

    taylor = TaylorFeatureMap(1)
    o, z = feature_attention(taylor(q * scale), taylor(k), v, use_norm)
    if use_norm:
        o = o / (z[..., None] + 1e-6)
    return o.to(q.dtype)


def feature_attention(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, with_normalizer: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal linear attention over mapped queries and keys: ``o_i = sum_{j <= i} (fq_i . fk_j) v_j`` and, with
    ``with_normalizer``, ``z_i = sum_{j <= i} fq_i . fk_j`` from the same pass (a ones column appended to v).

    fq, fk ``[B, T, H, F]``, v ``[B, T, H, V]`` -> ``(o [B, T, H, V], z [B, T, H] or None)`` (chunked, ungated)."""
    V = v.shape[-1]
    if with_normalizer:
        v = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
    o, _ = chunk_simple_gla(fq, fk, v, scale=1.0)
    return (o[..., :V], o[..., V]) if with_normalizer else (o, None)


__all__ = ["based_attention", "check_based_inputs", "feature_attention"]
