"""ABC in plain PyTorch: the token-by-token reference (float64 inputs give float64 results)."""

from __future__ import annotations

import torch

from fla.ops.gsa.naive import naive_recurrent_gsa


def naive_recurrent_abc(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Token-by-token ABC; arguments and returns of :func:`fla.ops.abc.chunk_abc`."""
    return naive_recurrent_gsa(q, k, v, s, None, None, initial_state, output_final_state, cu_seqlens)


def naive_softmax_abc(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """ABC as the paper writes it (dense ``[B, T, H, ...]``, no state; a second, independent reference)::

        Kslots_t = sum_{j <= t} exp(s_j) k_j / sum_{j <= t} exp(s_j)      (per slot, [M, K])
        o_t      = softmax(q_t Kslots_t^T / sqrt(K)) Vslots_t

    Returns ``o [B, T, H, V]`` (float32, float64 for float64 inputs).
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, v, s = (x.to(dtype) for x in (q, k, v, s))
    w = (s - s.amax(1, keepdim=True)).exp()  # [B, T, H, M]
    z = w.cumsum(1)[..., None]
    k_slots = (w[..., None] * k[..., None, :]).cumsum(1) / z  # [B, T, H, M, K]
    v_slots = (w[..., None] * v[..., None, :]).cumsum(1) / z  # [B, T, H, M, V]
    p = torch.einsum("bthk,bthmk->bthm", q * q.shape[-1] ** -0.5, k_slots).softmax(-1)
    return torch.einsum("bthm,bthmv->bthv", p, v_slots)
