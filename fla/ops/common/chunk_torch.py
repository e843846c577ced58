"""The chunked form of gated linear attention in vectorized PyTorch (the CPU path; autograd-friendly).

Within a chunk of ``BT`` tokens let ``G`` be the inclusive cumsum of the log gates (scalar ``g``
or vector ``gk``). With ``S`` the state before the chunk and ``L`` its last row::

    o_i  = scale * (q_i * exp(G_i)) S + sum_{j <= i} scale * (q_i * k_j * exp(G_i - G_j)) v_j
    S'   = exp(G_L) * S + sum_j (k_j * exp(G_L - G_j))^T v_j

Only differences ``G_i - G_j`` with ``i >= j`` (or ``G_L - G_j``) are exponentiated, so no factor
exceeds 1 and strong decays cannot overflow. Vector gates build the pairwise decay tensor
``[BT, BT, K]`` explicitly, so they use a smaller chunk (16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.ops.utils.varlen import pad_sequences, unpad_sequences


def _chunks(x: torch.Tensor, bt: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T_pad, H, ...]`` -> ``[B, H, NT, BT, ...]`` in ``dtype``."""
    B, T, H = x.shape[:3]
    x = x.to(dtype).movedim(2, 1)
    return x.reshape(B, H, T // bt, bt, *x.shape[3:])


def chunk_gated_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked gated linear attention.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` scalar log gates, or gk: ``[B, T, H, K]`` vector log gates (or neither).
        initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
        chunk_size: tokens per chunk (default 64 for scalar / no gates, 16 for vector gates).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state ``[N, H, K, V]``, both float32 (float64 for
        float64 inputs).
    """
    if cu_seqlens is not None:
        pad = lambda x: None if x is None else pad_sequences(x, cu_seqlens)
        o, ht = chunk_gated_torch(pad(q), pad(k), pad(v), pad(g), pad(gk), scale, initial_state, None, chunk_size)
        return unpad_sequences(o, cu_seqlens), ht

    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    bt = chunk_size or (16 if gk is not None else 64)
    nt = max(1, -(-T // bt))
    # zero padding to a whole number of chunks: k = 0 adds nothing and g = 0 decays nothing
    padded = [None if x is None else F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)) for x in (q, k, v, g, gk)]
    q, k, v, g, gk = (None if x is None else _chunks(x, bt, dtype) for x in padded)
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()

    if gk is not None:
        G = gk.cumsum(-2)  # [B, H, NT, BT, K]
        decay = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
        A = torch.einsum("...ik,...jk,...ijk->...ij", q, k, decay)
        q_inter, k_inter = q * G.exp(), k * (G[..., -1:, :] - G).exp()
        state_decay = G[..., -1, :, None].exp()  # [B, H, NT, K, 1]
    elif g is not None:
        G = g.cumsum(-1)  # [B, H, NT, BT]
        decay = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        A = (q @ k.transpose(-1, -2)) * decay
        q_inter, k_inter = q * G.exp()[..., None], k * (G[..., -1:] - G).exp()[..., None]
        state_decay = G[..., -1, None, None].exp()  # [B, H, NT, 1, 1]
    else:
        A = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)
        q_inter, k_inter, state_decay = q, k, None
    o = (A * scale) @ v  # [B, H, NT, BT, V]

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    inter = []
    for c in range(nt):
        inter.append(q_inter[:, :, c] @ S)
        S = S if state_decay is None else state_decay[:, :, c] * S
        S = S + k_inter[:, :, c].transpose(-1, -2) @ v[:, :, c]
    o = o + scale * torch.stack(inter, 2)
    o = o.reshape(B, H, nt * bt, V)[:, :, :T].movedim(1, 2)
    return o, S
