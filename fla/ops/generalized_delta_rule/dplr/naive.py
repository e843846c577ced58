"""DPLR delta rule in plain PyTorch: the token-by-token reference and the chunked CPU path.

Per head, with the state ``S [K, V]`` (fla 0.6.0's layout and order: the low-rank term reads the state
*before* the token's decay)::

    S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
    o_t = scale * S_t^T q_t

The chunked form is in ``README.md``; autograd gives its backward.
"""

from __future__ import annotations

import torch

from fla.ops.common.inputs import default_scale
from fla.ops.utils.varlen import pad_sequences, per_sequence, unpad_sequences

TORCH_CHUNK = 16  # tokens per chunk of the PyTorch chunked form


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _recurrence(q, k, v, a, b, gk, h0, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``[B, T, H, *]`` inputs, ``h0 [B, H, K, V]`` or ``None`` -> ``(o [B, T, H, V], S [B, H, K, V])``."""
    dtype = _work_dtype(q)
    B, T, H, K = q.shape
    q, k, v, a, b, gk = (x.to(dtype) for x in (q, k, v, a, b, gk))
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=dtype) if h0 is None else h0.to(dtype)
    outs = []
    for t in range(T):
        erased = torch.einsum("bhk,bhkv->bhv", a[:, t], S)  # a_t^T S_{t-1}  [B, H, V]
        S = gk[:, t].exp()[..., None] * S + b[:, t, ..., None] * erased[..., None, :]
        S = S + k[:, t, ..., None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, v.shape[-1], dtype=dtype)
    return o, S


def naive_recurrent_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token DPLR delta rule (the reference; float64 inputs give a float64 result).

    Args:
        q, k, a, b: ``[B, T, H, K]``; v: ``[B, T, H, V]``; gk: ``[B, T, H, K]`` log decays;
        scale: default ``K ** -0.5``; initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
    Returns:
        ``o`` ``[B, T, H, V]`` (float32, float64 for float64 inputs) and the final state ``[N, H, K, V]``
        when ``output_final_state``.
    """
    scale = default_scale(scale, k)
    step = lambda q, k, v, a, b, gk, h0: _recurrence(q, k, v, a, b, gk, h0, scale)
    if cu_seqlens is None:
        o, ht = step(q, k, v, a, b, gk, initial_state)
    else:
        o, ht = per_sequence(step, [q, k, v, a, b, gk], initial_state, cu_seqlens)
    return o, ht if output_final_state else None


def _pair_decay(G_rows: torch.Tensor, G_cols: torch.Tensor, strict: bool) -> torch.Tensor:
    """``exp(G_rows_i - G_cols_j)`` ``[.., C, C, K]`` on ``j <= i`` (``j < i`` when ``strict``), 0 elsewhere.

    The difference is masked before ``exp``: above the diagonal it may be large and positive."""
    C = G_rows.shape[-2]
    mask = torch.ones(C, C, dtype=torch.bool, device=G_rows.device).tril(-1 if strict else 0)
    diff = G_rows.unsqueeze(-2) - G_cols.unsqueeze(-3)  # [.., C(i), C(j), K]
    return diff.masked_fill(~mask[..., None], float("-inf")).exp()


def _chunked(q, k, v, a, b, gk, h0, scale: float, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``[B, T, H, *]`` (``T`` a multiple of ``C``) -> ``(o, S)``: the WY chunked form (README.md)."""
    dtype = _work_dtype(q)
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = T // C
    # [B, H, NT, C, D]
    q, k, v, a, b, gk = (
        x.to(dtype).reshape(B, NT, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4) for x in (q, k, v, a, b, gk)
    )
    q = q * scale
    G = gk.cumsum(-2)  # inclusive chunk-local cumsum
    Gx = G - gk  # exclusive: the decay before the token (the low-rank term reads S_{t-1})
    E_in, E_ex = _pair_decay(G, G, strict=False), _pair_decay(Gx, G, strict=True)
    scores = lambda x, y, E: torch.einsum("...ic,...jc,...ijc->...ij", x, y, E)  # [B, H, NT, C, C]
    A_qk, A_qb = scores(q, k, E_in), scores(q, b, E_in)
    A_ak, A_ab = scores(a, k, E_ex), scores(a, b, E_ex)
    eye = torch.eye(C, dtype=dtype, device=q.device)
    # u = (I - A_ab)^{-1} (w h + A_ak v): the erased values a_i^T S_{i-1} of the chunk, given the state h
    w = torch.linalg.solve_triangular(eye - A_ab, a * Gx.exp(), upper=False, unitriangular=True)  # [.., C, K]
    u0 = torch.linalg.solve_triangular(eye - A_ab, A_ak @ v, upper=False, unitriangular=True)  # [.., C, V]
    GL = G[..., -1:, :]  # [B, H, NT, 1, K]
    kd, bd = k * (GL - G).exp(), b * (GL - G).exp()  # keys / b decayed to the chunk end
    qd = q * G.exp()
    S = q.new_zeros(B, H, K, V, dtype=dtype) if h0 is None else h0.to(dtype)
    outs = []
    for c in range(NT):
        u = w[:, :, c] @ S + u0[:, :, c]  # [B, H, C, V]
        outs.append(qd[:, :, c] @ S + A_qk[:, :, c] @ v[:, :, c] + A_qb[:, :, c] @ u)
        S = GL[:, :, c, 0, :, None].exp() * S + kd[:, :, c].transpose(-1, -2) @ v[:, :, c]
        S = S + bd[:, :, c].transpose(-1, -2) @ u
    o = torch.stack(outs, 2) if outs else v.new_zeros(B, H, 0, C, V, dtype=dtype)  # [B, H, NT, C, V]
    return o.permute(0, 2, 3, 1, 4).reshape(B, T, H, V), S


def chunk_dplr_torch(
    q, k, v, a, b, gk, scale: float, initial_state=None, cu_seqlens=None, chunk_size: int = TORCH_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked form for any batch: varlen rows are padded to ``[N, T_max]`` (zero keys, ``a``, ``b`` and
    ``gk`` after a sequence's end leave its state unchanged), ``T`` to a multiple of ``chunk_size``.
    Returns ``o [B, T, H, V]`` (float32 / float64) and the final state ``[N, H, K, V]``."""
    xs = (q, k, v, a, b, gk)
    if cu_seqlens is not None:
        xs = tuple(pad_sequences(x, cu_seqlens) for x in xs)
    T = xs[0].shape[1]
    pad = (-T) % chunk_size
    if pad:
        xs = tuple(torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in xs)
    o, ht = _chunked(*xs, initial_state, scale, chunk_size)
    o = o[:, :T]
    if cu_seqlens is not None:
        o = unpad_sequences(o, cu_seqlens)
    return o, ht


def naive_chunk_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked DPLR delta rule in PyTorch (the CPU path of :func:`chunk_dplr_delta_rule`; autograd gives the
    backward). Same arguments as :func:`naive_recurrent_dplr_delta_rule`; ``o`` in ``v.dtype`` (float64 stays)."""
    o, ht = chunk_dplr_torch(q, k, v, a, b, gk, default_scale(scale, k), initial_state, cu_seqlens)
    return o.to(v.dtype), ht if output_final_state else None


def naive_recurrent_dplr_torch(q, k, v, a, b, gk, scale: float, initial_state=None, cu_seqlens=None):
    """:func:`naive_recurrent_dplr_delta_rule` always returning the final state (the ``fused_recurrent`` CPU path)."""
    return naive_recurrent_dplr_delta_rule(q, k, v, a, b, gk, scale, initial_state, True, cu_seqlens)


__all__ = ["chunk_dplr_torch", "naive_chunk_dplr_delta_rule", "naive_recurrent_dplr_delta_rule"]
