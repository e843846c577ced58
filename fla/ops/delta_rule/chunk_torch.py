"""The chunked (WY) form of the (gated) delta rule in vectorized PyTorch: the CPU path, autograd-friendly.

Within a chunk of ``BT`` tokens let ``G`` be the inclusive cumsum of the log gates (zero when
ungated), ``S`` the state before the chunk and ``L`` its last row. Unrolling the recurrence, the
state after token ``i`` is ``exp(G_i) S + sum_{j <= i} exp(G_i - G_j) k_j u_j^T`` where the
"new values" ``u`` solve the unit lower-triangular system::

    (I + A) u = diag(beta) v - diag(beta exp(G)) k S,     A_ij = beta_i exp(G_i - G_j) k_i.k_j  (j < i)

so ``u = U - W S`` with ``[W, U] = (I + A)^{-1} [diag(beta exp(G)) k, diag(beta) v]`` (the WY
representation, one triangular solve per chunk, independent of ``S``). Then::

    o_i = scale * (exp(G_i) q_i^T S + sum_{j <= i} exp(G_i - G_j) (q_i.k_j) u_j)
    S'  = exp(G_L) S + sum_j exp(G_L - G_j) k_j u_j^T

Only differences ``G_i - G_j`` with ``i >= j`` (or ``G_i``, ``G_L - G_j``) are exponentiated, so
no factor exceeds 1. Everything runs in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.ops.common.chunk_torch import _chunks
from fla.ops.utils.varlen import pad_sequences, unpad_sequences


def wy_representation(
    k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[W, U] = (I + A)^{-1} [diag(beta exp(G)) k, diag(beta) v]`` for every chunk.

    Args:
        k: ``[..., BT, K]``; v: ``[..., BT, V]``; beta: ``[..., BT]``; g: ``[..., BT]`` log gates of
            the chunk (``G`` is their cumsum) or ``None``; all in the compute dtype.
    Returns:
        W ``[..., BT, K]`` and U ``[..., BT, V]``.
    """
    bt = k.shape[-2]
    strictly_causal = torch.ones(bt, bt, dtype=torch.bool, device=k.device).tril(-1)
    A = beta[..., :, None] * (k @ k.transpose(-1, -2))  # [..., BT, BT]
    k_scaled = beta[..., None] * k
    if g is not None:
        G = g.cumsum(-1)
        A = A * (G[..., :, None] - G[..., None, :]).masked_fill(~strictly_causal, float("-inf")).exp()
        k_scaled = k_scaled * G.exp()[..., None]
    A = A.masked_fill(~strictly_causal, 0.0)
    # unitriangular: the solver takes the unit diagonal as given and reads only A's strict lower part
    WU = torch.linalg.solve_triangular(
        A, torch.cat([k_scaled, beta[..., None] * v], -1), upper=False, unitriangular=True
    )
    return WU[..., : k.shape[-1]], WU[..., k.shape[-1] :]


def chunk_delta_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked (gated) delta rule.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; g: ``[B, T, H]`` log
            decays or ``None``; initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state ``[N, H, K, V]``, both float32 (float64 for
        float64 inputs).
    """
    if cu_seqlens is not None:
        # padded tokens have k = 0, beta = 0 and g = 0: they leave the state untouched
        pad = lambda x: None if x is None else pad_sequences(x, cu_seqlens)
        o, ht = chunk_delta_torch(
            pad(q), pad(k), pad(v), pad(beta), pad(g), scale, initial_state, None, chunk_size
        )  # fmt: skip
        return unpad_sequences(o, cu_seqlens), ht

    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    bt = chunk_size
    nt = max(1, -(-T // bt))
    padded = [None if x is None else F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)) for x in (q, k, v, beta, g)]
    q, k, v, beta, g = (None if x is None else _chunks(x, bt, dtype) for x in padded)
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()

    W, U = wy_representation(k, v, beta, g)
    if g is None:
        decay = causal.to(dtype)  # [BT, BT]
        G_exp = last_exp = beta.new_ones(())
        k_tail = k
    else:
        G = g.cumsum(-1)  # [B, H, NT, BT]
        decay = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        G_exp = G.exp()[..., None]  # [B, H, NT, BT, 1]
        last_exp = G[..., -1].exp()[..., None, None]  # [B, H, NT, 1, 1]
        k_tail = k * (G[..., -1:] - G).exp()[..., None]
    QK = (q @ k.transpose(-1, -2)) * decay * scale  # [B, H, NT, BT, BT] causal
    q_inter = q * G_exp * scale

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outs = []
    for c in range(nt):
        u = U[:, :, c] - W[:, :, c] @ S  # [B, H, BT, V]
        outs.append(q_inter[:, :, c] @ S + QK[:, :, c] @ u)
        last = last_exp if last_exp.dim() == 0 else last_exp[:, :, c]
        S = last * S + k_tail[:, :, c].transpose(-1, -2) @ u
    o = torch.stack(outs, 2).reshape(B, H, nt * bt, V)[:, :, :T].movedim(1, 2)
    return o, S
