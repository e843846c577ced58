"""``parallel_simple_gla``: simple GLA in fla's parallel API, optionally with the attention scores."""

import torch

from fla.ops.simple_gla.chunk import chunk_simple_gla


def simple_gla_scores(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor | None, scale: float) -> torch.Tensor:
    """The materialized causal scores ``A [B, H, T, T]`` (``q.dtype``) of fla's ``output_attentions``:

    ``A[b, h, i, j] = scale * q_i . k_j * exp(G_i - G_j)`` for ``j <= i`` and 0 above the diagonal, with
    ``G = cumsum_t(g)`` (``g [B, T, H]`` log decays; ``None``: no decay). float32 inside."""
    s = torch.einsum("bihk,bjhk->bhij", q.float(), k.float()) * scale
    T = q.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if g is not None:
        G = g.float().cumsum(1).transpose(1, 2)  # [B, H, T]
        # mask the exponent before exp: above the diagonal G_i - G_j is positive and may overflow
        diff = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
        s = s * diff.exp()
    return s.masked_fill(~causal, 0).to(q.dtype)


def check_output_attentions(output_attentions: bool, cu_seqlens: torch.Tensor | None, name: str) -> None:
    """fla builds ``[B, H, T, T]`` scores per batch row only: refuse them for packed (varlen) inputs."""
    if output_attentions and cu_seqlens is not None:
        raise ValueError(
            f"{name}: output_attentions=True is not supported with cu_seqlens (got {len(cu_seqlens) - 1} packed "
            "sequences); the [B, H, T, T] scores are per batch row"
        )


def parallel_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    output_attentions: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA ``o_i = sum_{j <= i} scale * (q_i . k_j) exp(G_i - G_j) v_j`` (``G = cumsum(g)``).

    The output comes from :func:`chunk_simple_gla` (the same maths, linear memory).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` log decays or ``None``.
        scale: default ``K ** -0.5``.
        output_attentions: also return the scores ``[B, H, T, T]`` (not with ``cu_seqlens``).
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``); cu_seqlens_cpu: accepted (fla's host copy), unused.
    Returns:
        ``o`` ``[B, T, H, V]`` and the scores or ``None``.
    """
    check_output_attentions(output_attentions, cu_seqlens, "parallel_simple_gla")
    if scale is None:
        scale = k.shape[-1] ** -0.5
    o, _ = chunk_simple_gla(q, k, v, g=g, scale=scale, cu_seqlens=cu_seqlens)
    attn = simple_gla_scores(q, k, g, scale) if output_attentions else None
    return o, attn


__all__ = ["check_output_attentions", "parallel_simple_gla", "simple_gla_scores"]
