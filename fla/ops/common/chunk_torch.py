"""The chunked form of gated linear attention in vectorized PyTorch (the CPU path; autograd-friendly).

Within a chunk of ``BT`` tokens let ``G`` be the inclusive cumsum of the log gates (scalar ``g``
or vector ``gk``). With ``S`` the state before the chunk and ``L`` its last row::

    o_i  = scale * (q_i * exp(G_i)) S + sum_{j <= i} scale * (q_i * k_j * exp(G_i - G_j)) v_j
    S'   = exp(G_L) * S + sum_j (k_j * exp(G_L - G_j))^T v_j

Only differences ``G_i - G_j`` with ``i >= j`` (or ``G_L - G_j``) are exponentiated, so no factor
exceeds 1 and strong decays cannot overflow. Vector gates build the pairwise decay tensor
``[BT, BT, K]`` explicitly, so they use a smaller chunk (16).

With a bonus ``u [H, K]`` (RWKV6, vector gates) the output reads the state before each token: the
queries' decay is the exclusive cumsum ``Gq = G - gk``, the sum runs over ``j < i`` and the diagonal is
``scale * (q_i * u * k_i) . 1`` (``Gq_i - G_j = G_{i-1} - G_j <= 0`` for ``j < i``).

The delta rule's chunked (WY) form (:func:`chunk_delta_torch`; ``G`` zero when ungated): the state
after token ``i`` is ``exp(G_i) S + sum_{j <= i} exp(G_i - G_j) k_j u_j^T`` where the "new values"
``u`` solve the unit lower-triangular system::

    (I + A) u = diag(beta) v - diag(beta exp(G)) k S,     A_ij = beta_i exp(G_i - G_j) k_i.k_j  (j < i)

so ``u = U - W S`` with ``[W, U] = (I + A)^{-1} [diag(beta exp(G)) k, diag(beta) v]`` (the WY
representation, one triangular solve per chunk, independent of ``S``). Then::

    o_i = scale * (exp(G_i) q_i^T S + sum_{j <= i} exp(G_i - G_j) (q_i.k_j) u_j)
    S'  = exp(G_L) S + sum_j exp(G_L - G_j) k_j u_j^T

Everything runs in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.ops.common.inputs import default_scale, expand_groups, l2norm, prepare_qk_beta, total_log_gate
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
    u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked gated linear attention.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` scalar log gates, or gk: ``[B, T, H, K]`` vector log gates (or neither).
        initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``).
        chunk_size: tokens per chunk (default 64 for scalar / no gates, 16 for vector gates).
        u: ``[H, K]`` the RWKV6 bonus (with ``gk``): the form of the module docstring.
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state ``[N, H, K, V]``, both float32 (float64 for
        float64 inputs).
    """
    if cu_seqlens is not None:
        pad = lambda x: None if x is None else pad_sequences(x, cu_seqlens)
        o, ht = chunk_gated_torch(
            pad(q), pad(k), pad(v), pad(g), pad(gk), scale, initial_state, None, chunk_size, u
        )  # fmt: skip
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

    if u is not None and gk is None:
        raise ValueError("the bonus u (RWKV6) needs the vector gate gk")
    if gk is not None:
        G = gk.cumsum(-2)  # [B, H, NT, BT, K]
        Gq = G if u is None else G - gk  # the queries' decay: exclusive with a bonus
        mask = causal if u is None else causal.tril(-1)
        decay = (Gq[..., :, None, :] - G[..., None, :, :]).masked_fill(~mask[..., None], float("-inf")).exp()
        A = torch.einsum("...ik,...jk,...ijk->...ij", q, k, decay)
        if u is not None:  # the current token through the bonus, on the diagonal
            A = A + torch.diag_embed((q * u.to(dtype)[None, :, None, None, :] * k).sum(-1))
        q_inter, k_inter = q * Gq.exp(), k * (G[..., -1:, :] - G).exp()
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


def chunk_gated_torch_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    g_gamma: torch.Tensor | None,
    gk: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch path of the GLA-family chunk ops (arguments as :class:`fla.ops.common.chunk.ChunkGatedFunction`,
    scalar gates ``g`` / ``g_gamma`` or a vector gate ``gk``): ``o`` in ``v.dtype`` and the final state or ``None``."""
    o, ht = chunk_gated_torch(
        q, k, v, g=total_log_gate(g, g_gamma, q), gk=gk, scale=default_scale(scale, k), initial_state=initial_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip
    return o.to(v.dtype), ht if output_final_state else None


def chunk_value_gated_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gv: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked linear attention with a value-side gate: ``S_t = S_{t-1} diag(exp(gv_t)) + k_t^T v_t``,
    ``o_t = scale * q_t S_t``. Per chunk (``G`` the chunk-local cumsum of ``gv``)::

        o_i = scale * (q_i S) * exp(G_i) + scale * sum_{j <= i} (q_i . k_j) v_j * exp(G_i - G_j)
        S'  = S * exp(G_L) + k^T (v * exp(G_L - G))

    Args:
        q, k: ``[B, T, H, K]``; v, gv: ``[B, T, H, V]``; initial_state: ``[N, H, K, V]``; cu_seqlens ``[N+1]``.
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state ``[N, H, K, V]`` (float32, float64 for float64 inputs).
    """
    if cu_seqlens is not None:
        pad = lambda x: pad_sequences(x, cu_seqlens)
        o, ht = chunk_value_gated_torch(pad(q), pad(k), pad(v), pad(gv), scale, initial_state, None, chunk_size)
        return unpad_sequences(o, cu_seqlens), ht

    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    bt = chunk_size
    nt = max(1, -(-T // bt))
    q, k, v, gv = (_chunks(F.pad(x, (0, 0, 0, 0, 0, nt * bt - T)), bt, dtype) for x in (q, k, v, gv))
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()
    G = gv.cumsum(-2)  # [B, H, NT, BT, V]
    decay = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
    A = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)  # [B, H, NT, BT, BT]
    o = scale * torch.einsum("...ij,...ijv,...jv->...iv", A, decay, v)
    v_inter, state_decay = v * (G[..., -1:, :] - G).exp(), G[..., -1, None, :].exp()  # [.., BT, V], [.., 1, V]

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    inter = []
    for c in range(nt):
        inter.append((q[:, :, c] @ S) * G[:, :, c].exp())
        S = S * state_decay[:, :, c] + k[:, :, c].transpose(-1, -2) @ v_inter[:, :, c]
    o = o + scale * torch.stack(inter, 2)
    o = o.reshape(B, H, nt * bt, V)[:, :, :T].movedim(1, 2)
    return o, S


def chunk_value_gated_torch_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gv: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch path of :func:`fla.ops.common.chunk_gv.chunk_value_gated` (same arguments): ``o`` in
    ``v.dtype`` and the final state or ``None``."""
    o, ht = chunk_value_gated_torch(q, k, v, gv, default_scale(scale, k), initial_state, cu_seqlens)
    return o.to(v.dtype), ht if output_final_state else None


# the delta-rule family: the WY form


def wy_representation(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    gk: torch.Tensor | None = None,
    *,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[W, U] = (I + A)^{-1} [diag(beta exp(G)) k, diag(beta) v]`` for every chunk.

    Args:
        k: ``[..., BT, K]``; v: ``[..., BT, V]``; beta: ``[..., BT]``; g: ``[..., BT]`` log gates of
            the chunk (``G`` is their cumsum) or ``None``; gk: ``[..., BT, K]`` per-key-channel log gates
            instead (KDA: ``A_ij = beta_i sum_k k_ik k_jk exp(G_ik - G_jk)``, ``exp(G)`` scales ``k``
            per channel) or ``None``; all in the compute dtype; p: ``[..., BT, K]`` Comba's erase keys or
            ``None``: then the rows use ``p`` and ``Ge = G - g`` (the state before the token's decay),
            ``A_ij = beta_i exp(Ge_i - G_j) p_i.k_j``, ``W = (I + A)^{-1} diag(beta exp(Ge)) p``; not with ``gk``.
    Returns:
        W ``[..., BT, K]`` and U ``[..., BT, V]``.
    """
    check_erase_gate(gk, p)
    bt = k.shape[-2]
    strictly_causal = torch.ones(bt, bt, dtype=torch.bool, device=k.device).tril(-1)
    if gk is not None:
        G = gk.cumsum(-2)  # [..., BT, K]
        decay = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~strictly_causal[..., None], float("-inf"))
        A = beta[..., :, None] * torch.einsum("...ik,...jk,...ijk->...ij", k, k, decay.exp())
        k_scaled = beta[..., None] * k * G.exp()
    else:
        rows = k if p is None else p
        A = beta[..., :, None] * (rows @ k.transpose(-1, -2))  # [..., BT, BT]
        k_scaled = beta[..., None] * rows
    if g is not None:
        G = g.cumsum(-1)
        Ge = G if p is None else G - g
        A = A * (Ge[..., :, None] - G[..., None, :]).masked_fill(~strictly_causal, float("-inf")).exp()
        k_scaled = k_scaled * Ge.exp()[..., None]
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
    gk: torch.Tensor | None = None,
    *,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked (gated) delta rule.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]``; g: ``[B, T, H]`` log
            decays or ``None``; initial_state: ``[N, H, K, V]``; cu_seqlens: ``[N+1]`` (``B == 1``);
            gk: ``[B, T, H, K]`` per-key-channel log decays (KDA; instead of ``g``) or ``None``: the
            vector-gate form builds ``[BT, BT, K]`` pairwise decays, so it runs 16-token chunks;
            p: ``[B, T, H, K]`` Comba's erase keys (see :func:`wy_representation`) or ``None``; not with ``gk``.
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state ``[N, H, K, V]``, both float32 (float64 for
        float64 inputs).
    """
    check_erase_gate(gk, p)
    if gk is not None:
        return _chunk_kda_torch(q, k, v, beta, gk, scale, initial_state, cu_seqlens)
    if cu_seqlens is not None:
        # padded tokens have k = 0, beta = 0 and g = 0: they leave the state untouched
        pad = lambda x: None if x is None else pad_sequences(x, cu_seqlens)
        o, ht = chunk_delta_torch(
            pad(q), pad(k), pad(v), pad(beta), pad(g), scale, initial_state, None, chunk_size, p=pad(p)
        )  # fmt: skip
        return unpad_sequences(o, cu_seqlens), ht

    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    bt = chunk_size
    nt = max(1, -(-T // bt))
    padded = [None if x is None else F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)) for x in (q, k, v, beta, g, p)]
    q, k, v, beta, g, p = (None if x is None else _chunks(x, bt, dtype) for x in padded)
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()

    W, U = wy_representation(k, v, beta, g, p=p)
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


def _chunk_kda_torch(q, k, v, beta, gk, scale, initial_state, cu_seqlens, bt: int = 16):
    """:func:`chunk_delta_torch` with a per-key-channel gate ``gk`` ``[B, T, H, K]`` (the same WY form with
    the decays ``exp(G_i - G_j)`` taken per channel)."""
    if cu_seqlens is not None:
        pad = lambda x: pad_sequences(x, cu_seqlens)
        o, ht = _chunk_kda_torch(pad(q), pad(k), pad(v), pad(beta), pad(gk), scale, initial_state, None, bt)
        return unpad_sequences(o, cu_seqlens), ht
    dtype = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    V = v.shape[-1]
    nt = max(1, -(-T // bt))
    padded = [F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)) for x in (q, k, v, beta, gk)]
    q, k, v, beta, gk = (_chunks(x, bt, dtype) for x in padded)
    causal = torch.ones(bt, bt, dtype=torch.bool, device=q.device).tril()

    W, U = wy_representation(k, v, beta, None, gk=gk)
    G = gk.cumsum(-2)  # [B, H, NT, BT, K]
    decay = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
    QK = torch.einsum("...ik,...jk,...ijk->...ij", q, k, decay) * scale  # [B, H, NT, BT, BT] causal
    q_inter = q * G.exp() * scale
    k_tail = k * (G[..., -1:, :] - G).exp()
    last_exp = G[..., -1, :, None].exp()  # [B, H, NT, K, 1]: the decay per key row of the state

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    outs = []
    for c in range(nt):
        u = U[:, :, c] - W[:, :, c] @ S  # [B, H, BT, V]
        outs.append(q_inter[:, :, c] @ S + QK[:, :, c] @ u)
        S = last_exp[:, :, c] * S + k_tail[:, :, c].transpose(-1, -2) @ u
    o = torch.stack(outs, 2).reshape(B, H, nt * bt, V)[:, :, :T].movedim(1, 2)
    return o, S


def chunk_delta_torch_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    allow_neg_eigval: bool,
    gk: torch.Tensor | None = None,
    *,
    p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch path of the chunked delta-rule ops (options applied here; ``g`` ``[B, T, H]``, ``gk``
    ``[B, T, H, K]`` or neither; ``p`` Comba's erase keys or ``None``, not with ``gk``): ``o`` in ``v.dtype``
    and the final state or ``None``. Shapes as :func:`chunk_delta_torch`."""
    check_erase_gate(gk, p)
    if p is not None:
        p = l2norm(p) if use_qk_l2norm_in_kernel else p
        _, p = expand_groups(q, p, v)
    q, k, beta = prepare_qk_beta(q, k, beta, use_qk_l2norm_in_kernel, allow_neg_eigval)
    q, k = expand_groups(q, k, v)
    o, ht = chunk_delta_torch(q, k, v, beta, g, default_scale(scale, k), initial_state, cu_seqlens, gk=gk, p=p)
    return o.to(v.dtype), ht if output_final_state else None


def check_erase_gate(gk: torch.Tensor | None, p: torch.Tensor | None) -> None:
    """Erase keys ``p`` (Comba) go with a scalar gate or none: the chunked forms have no erase keys with the
    per-key-channel gate ``gk`` (KDA)."""
    if gk is not None and p is not None:
        raise ValueError(
            "erase keys p (Comba) with a per-key-channel gate gk (KDA) are not supported by the chunked delta "
            "rule: p goes with no gate or a scalar gate g"
        )
