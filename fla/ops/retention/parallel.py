"""``parallel_retention``: retention in fla's parallel API, optionally with the attention scores."""

import torch

from fla.ops.retention.chunk import chunk_retention
from fla.ops.retention.decays import retention_log_decays
from fla.ops.simple_gla.parallel import check_output_attentions, simple_gla_scores


def parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    output_attentions: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Retention ``o_i = sum_{j <= i} scale * (q_i . k_j) gamma_h^(i - j) v_j``, ``gamma_h = 1 - 2^(-5-h)``.

    The output comes from :func:`chunk_retention` (the same maths, linear memory).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; scale: default ``K ** -0.5``.
        output_attentions: also return the scores ``[B, H, T, T]`` (``scale * q_i . k_j * gamma_h^(i-j)`` on
            ``j <= i``, 0 above; not with ``cu_seqlens``).
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the scores or ``None``.
    """
    check_output_attentions(output_attentions, cu_seqlens, "parallel_retention")
    if scale is None:
        scale = k.shape[-1] ** -0.5
    o, _ = chunk_retention(q, k, v, scale=scale, cu_seqlens=cu_seqlens)
    attn = None
    if output_attentions:
        B, T, H = q.shape[:3]
        g = retention_log_decays(H, q.device).expand(B, T, H)
        attn = simple_gla_scores(q, k, g, scale)
    return o, attn


__all__ = ["parallel_retention"]
