"""MesaNet in plain PyTorch: token-by-token references (exact solve and conjugate gradient) and the
chunked CPU path's stages.

Per head, with ``A_t = H^kk_t + diag(lamb)`` (README.md has the maths)::

    H^kk_t = exp(g_t) H^kk_{t-1} + beta_t k_t k_t^T          [K, K]
    H^kv_t = exp(g_t) H^kv_{t-1} + beta_t k_t v_t^T          [K, V]
    x_t    = A_t^{-1} q_t          (exactly, or by a fixed number of CG steps)
    o_t    = x_t^T H^kv_t

The states are symmetric in use: every product with ``H^kk`` is written ``p^T H^kk`` (row vectors), as the
kernels do, which is ``H^kk p`` for the symmetric states the recurrence builds.

CG steps follow fla 0.6.0 exactly, ``eps = 1e-5`` guarding both divisions::

    alpha = |r|^2 / (p^T A p + eps);  x += alpha p;  r -= alpha A p;  p = r + |r_new|^2 / (|r|^2 + eps) p

from ``x_0 = 0`` in the chunked (training) form and from the Jacobi guess ``x_0 = q / (diag(A) + eps)``
in the decoding form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CG_EPS = 1e-5
"""The guard of both CG divisions (fla 0.6.0's)."""


def _dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float32, or float64 when any input is float64."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def cg_steps(apply_a, rhs: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` CG steps for ``A x = rhs`` from ``x`` (batched over every leading dim; the last dim is the
    vector). ``apply_a(p)`` returns ``A p`` (``p [..., K]``)."""
    r = rhs - apply_a(x)
    p = r
    delta = (r * r).sum(-1, keepdim=True)
    for _ in range(iters):
        ap = apply_a(p)
        alpha = delta / ((p * ap).sum(-1, keepdim=True) + CG_EPS)
        x = x + alpha * p
        r = r - alpha * ap
        delta_new = (r * r).sum(-1, keepdim=True)
        p = r + delta_new / (delta + CG_EPS) * p
        delta = delta_new
    return x


def _states(B, H, K, V, h0, dtype, device):
    return torch.zeros(B, H, K, V, dtype=dtype, device=device) if h0 is None else h0.to(dtype).clone()


def naive_mesa_net(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    lamb: torch.Tensor,
    beta: torch.Tensor,
    h_kk_init: torch.Tensor | None = None,
    h_kv_init: torch.Tensor | None = None,
    max_CG_iteration: int | None = 30,
    jacobi_init: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-by-token MesaNet (the reference; float64 inputs compute in float64, else float32).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; g: ``[B, T, H]`` log decays; lamb: ``[H, K]``;
        beta: ``[B, T, H]``; h_kk_init: ``[B, H, K, K]``; h_kv_init: ``[B, H, K, V]``.
        max_CG_iteration: CG steps per token, or ``None`` for the exact solve (``torch.linalg.solve``).
        jacobi_init: start CG from ``q / (diag(A) + eps)`` (the decoding form) instead of 0 (the chunked form).
    Returns:
        ``o [B, T, H, V]``, the final ``H^kk [B, H, K, K]`` and ``H^kv [B, H, K, V]``.
    """
    dtype = _dtype(q, k, v, g, lamb, beta, h_kk_init, h_kv_init)
    q, k, v, g, lamb, beta = (t.to(dtype) for t in (q, k, v, g, lamb, beta))
    B, T, H, K = q.shape
    V = v.shape[-1]
    h_kk = _states(B, H, K, K, h_kk_init, dtype, q.device)
    h_kv = _states(B, H, K, V, h_kv_init, dtype, q.device)
    eye = torch.eye(K, dtype=dtype, device=q.device)
    outs = []
    for t in range(T):
        decay = g[:, t].exp()[..., None, None]
        kb = k[:, t] * beta[:, t, :, None]
        h_kk = decay * h_kk + kb[..., :, None] * k[:, t, :, None, :]
        h_kv = decay * h_kv + kb[..., :, None] * v[:, t, :, None, :]
        a = h_kk.transpose(-1, -2) + lamb[..., None] * eye  # p^T H^kk: the system of H^kk^T
        if max_CG_iteration is None:
            x = torch.linalg.solve(a, q[:, t])
        else:
            x0 = q[:, t] / (torch.diagonal(a, dim1=-2, dim2=-1) + CG_EPS) if jacobi_init else torch.zeros_like(q[:, t])
            x = cg_steps(lambda p, a=a: (a @ p[..., None])[..., 0], q[:, t], x0, max_CG_iteration)
        outs.append((x[..., None, :] @ h_kv)[..., 0, :])
    return torch.stack(outs, 1), h_kk, h_kv


def naive_mesa_net_exact(q, k, v, g, lamb, beta, h_kk_init=None, h_kv_init=None):
    """fla 0.6.0's ``naive_mesa_net_exact``: :func:`naive_mesa_net` with the exact solve."""
    return naive_mesa_net(q, k, v, g, lamb, beta, h_kk_init, h_kv_init, max_CG_iteration=None)


def naive_mesa_net_decoding_one_step(q, k, v, g, lamb, beta, prev_h_kk, prev_h_kv, max_CG_iteration=30):
    """One decoding step (``q, k [B, H, K]``, ``v [B, H, V]``, ``g, beta [B, H]``, ``lamb [H, K]``, states
    ``[B, H, K, K]`` / ``[B, H, K, V]``) from the Jacobi guess: ``(o [B, H, V], h_kk, h_kv)``."""
    o, h_kk, h_kv = naive_mesa_net(
        q[:, None], k[:, None], v[:, None], g[:, None], lamb, beta[:, None], prev_h_kk, prev_h_kv,
        max_CG_iteration, jacobi_init=True,
    )  # fmt: skip
    return o[:, 0], h_kk, h_kv


# ---- the chunked form (the CPU path's stages), dense [B, T, H, ...] inputs --------------------------


def to_chunks(x: torch.Tensor, bt: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[B, H, NT, BT, ...]`` in ``dtype``, zero-padded to whole chunks (zero keys add
    nothing to the states, zero log gates decay nothing)."""
    B, T, H = x.shape[:3]
    nt = max(1, -(-T // bt))
    x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, nt * bt - T)).to(dtype).movedim(2, 1)
    return x.reshape(B, H, nt, bt, *x.shape[3:])


def from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, H, NT, BT, D]`` -> ``[B, T, H, D]``."""
    B, H, nt, bt, D = x.shape
    return x.reshape(B, H, nt * bt, D)[:, :, :T].movedim(1, 2)


def chunk_states_torch(
    kb: torch.Tensor, y: torch.Tensor, g: torch.Tensor, h0: torch.Tensor | None, bt: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """States before each chunk of ``S_t = exp(g_t) S_{t-1} + kb_t y_t^T``.

    Args:
        kb: ``[B, T, H, K]``; y: ``[B, T, H, V]``; g: ``[B, T, H]``; h0: ``[B, H, K, V]`` or ``None``.
    Returns:
        ``h [B, H, NT, K, V]`` and the final state ``[B, H, K, V]`` (float32, float64 for float64 inputs).
    """
    dtype = _dtype(kb, y, g, h0)
    B, T, H, K = kb.shape
    kc, yc, G = to_chunks(kb, bt, dtype), to_chunks(y, bt, dtype), to_chunks(g, bt, dtype).cumsum(-1)
    kc = kc * (G[..., -1:] - G).exp()[..., None]
    S = _states(B, H, K, y.shape[-1], h0, dtype, kb.device)
    states = []
    for c in range(kc.shape[2]):
        states.append(S)
        S = G[:, :, c, -1, None, None].exp() * S + kc[:, :, c].transpose(-1, -2) @ yc[:, :, c]
    return torch.stack(states, 2), S


def chunk_cg_torch(
    rhs: torch.Tensor,
    k: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    h_kk: torch.Tensor,
    lamb: torch.Tensor,
    iters: int,
    bt: int,
) -> torch.Tensor:
    """``x_t = A_t^{-1} rhs_t`` for every token by ``iters`` CG steps from 0, in the chunked form:
    ``A_t p_t = exp(G_t) p_t^T h + sum_{s <= t in the chunk} exp(G_t - G_s) beta_s (p_t . k_s) k_s + lamb * p_t``.

    Args:
        rhs, k: ``[B, T, H, K]``; beta, g: ``[B, T, H]``; h_kk: ``[B, H, NT, K, K]`` states before each chunk;
        lamb: ``[H, K]``.
    Returns:
        ``x [B, T, H, K]`` (float32, float64 for float64 inputs).
    """
    dtype = _dtype(rhs, k, beta, g, h_kk, lamb)
    T = rhs.shape[1]
    rc, kc, bc, G = (to_chunks(t, bt, dtype) for t in (rhs, k, beta, g))
    G = G.cumsum(-1)
    causal = torch.ones(bt, bt, dtype=torch.bool, device=rhs.device).tril()
    m = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")).exp() * bc[..., None, :]
    eg = G.exp()[..., None]
    h_kk, lam = h_kk.to(dtype), lamb.to(dtype)[None, :, None, None, :]

    def apply_a(p):
        return (p * eg) @ h_kk + ((p @ kc.transpose(-1, -2)) * m) @ kc + lam * p

    return from_chunks(cg_steps(apply_a, rc, torch.zeros_like(rc), iters), T)


__all__ = [
    "CG_EPS",
    "cg_steps",
    "chunk_cg_torch",
    "chunk_states_torch",
    "naive_mesa_net",
    "naive_mesa_net_decoding_one_step",
    "naive_mesa_net_exact",
]
