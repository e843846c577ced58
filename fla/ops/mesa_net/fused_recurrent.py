"""MesaNet token by token: the decoding path (inference only: no gradients on the Triton path).

One program per sequence and head keeps ``H^kk [K, K]`` and ``H^kv [K, V]`` in float32 registers and, for
each token, updates both, solves ``(H^kk + diag(lamb)) x = q`` by CG steps and writes ``o = x^T H^kv``.

CG starts from 0, as the chunked form does, so decoding from a cache continues exactly what
:func:`fla.ops.mesa_net.chunk_mesa_net` computes (``jacobi_init=True``: from the Jacobi guess
``x_0 = q / (diag(H^kk) + lamb + eps)`` instead, fla 0.6.0's ``mesa_net_decoding_one_step``; the CG result
then differs from the chunk op's by the CG accuracy, ~1e-3 with unit queries).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fla.ops.common.indexing import token_bounds
from fla.ops.common.inputs import l2norm
from fla.ops.common.tuning import given_heuristics
from fla.ops.mesa_net.cg import MAX_HEAD_DIM
from fla.ops.mesa_net.inputs import check_mesa_inputs
from fla.ops.mesa_net.naive import CG_EPS, naive_mesa_net
from fla.utils import empty
from fla.utils.backend import dispatch
from fla.utils.launch import lean_launch
from fla.utils.sizes import next_power_of_2
from fla.utils.tensors import contiguous


@lean_launch
@given_heuristics(USE_S0="h_kk0", STORE_SN="h_kk_out", IS_VARLEN="cu_seqlens")
@triton.jit(do_not_specialize=["T"])
def mesa_net_fused_recurrent_fwd_kernel(
    q,
    k,
    v,
    g,
    beta,
    lamb,
    h_kk0,
    h_kv0,
    o,
    h_kk_out,
    h_kv_out,
    cu_seqlens,
    eps,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ITERS: tl.constexpr,
    JACOBI_INIT: tl.constexpr,
    USE_S0: tl.constexpr,
    STORE_SN: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    eps = tl.cast(eps, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_nh = tl.program_id(0).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T_n = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)

    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)  # [BK], [BV]
    m_k, m_v = o_k < K, o_v < V
    o_kk, m_kk = o_k[:, None] * K + o_k[None, :], m_k[:, None] & m_k[None, :]  # [BK, BK]
    o_kv, m_kv = o_k[:, None] * V + o_v[None, :], m_k[:, None] & m_v[None, :]  # [BK, BV]
    b_lamb = tl.load(lamb + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
    m_diag = (o_k[:, None] == o_k[None, :]) & m_kk

    b_hkk = tl.zeros([BK, BK], dtype=tl.float32)
    b_hkv = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_S0:
        b_hkk += tl.load(h_kk0 + i_nh * K * K + o_kk, mask=m_kk, other=0.0).to(tl.float32)
        b_hkv += tl.load(h_kv0 + i_nh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for t in range(0, T_n):
        i_tok = (bos + t) * H + i_h
        b_q = tl.load(q + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_k = tl.load(k + i_tok * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + i_tok * V + o_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_decay = tl.exp(tl.load(g + i_tok).to(tl.float32))
        b_kb = b_k * tl.load(beta + i_tok).to(tl.float32)
        b_hkk = b_hkk * b_decay + b_kb[:, None] * b_k[None, :]
        b_hkv = b_hkv * b_decay + b_kb[:, None] * b_v[None, :]

        # CG on (H^kk + diag(lamb)) x = q, products as row vectors x^T H^kk
        if JACOBI_INIT:
            b_x = b_q / (tl.sum(tl.where(m_diag, b_hkk, 0.0), axis=1) + b_lamb + eps)
            b_r = b_q - tl.sum(b_hkk * b_x[:, None], axis=0) - b_lamb * b_x
        else:
            b_x = tl.zeros([BK], dtype=tl.float32)
            b_r = b_q
        b_p = b_r
        b_delta = tl.sum(b_r * b_r, axis=0)
        for _ in range(ITERS):
            b_Ap = tl.sum(b_hkk * b_p[:, None], axis=0) + b_lamb * b_p
            b_alpha = b_delta / (tl.sum(b_p * b_Ap, axis=0) + eps)
            b_x += b_alpha * b_p
            b_r -= b_alpha * b_Ap
            b_delta_new = tl.sum(b_r * b_r, axis=0)
            b_p = b_r + b_delta_new / (b_delta + eps) * b_p
            b_delta = b_delta_new
        b_o = tl.sum(b_hkv * b_x[:, None], axis=0)  # [BV]
        tl.store(o + i_tok * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_SN:
        tl.store(h_kk_out + i_nh * K * K + o_kk, b_hkk, mask=m_kk)
        tl.store(h_kv_out + i_nh * K * V + o_kv, b_hkv, mask=m_kv)


@contiguous
def _recurrent_triton(q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, use_l2, cu_seqlens, jacobi):
    B, T, H, K = q.shape
    V = v.shape[-1]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(
            f"fused_recurrent_mesa_net: head dims K={K}, V={V} > {MAX_HEAD_DIM} are not supported by the Triton kernel"
        )
    if use_l2:
        q, k = l2norm(q), l2norm(k)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    o = empty(B, T, H, V, dtype=v.dtype, device=v.device)
    h_kk = empty(N, H, K, K, dtype=torch.float32, device=q.device) if output_final_state else None
    h_kv = empty(N, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    if h_kk0 is None and h_kv0 is not None:
        h_kk0 = torch.zeros(N, H, K, K, dtype=torch.float32, device=q.device)
    if h_kv0 is None and h_kk0 is not None:
        h_kv0 = torch.zeros(N, H, K, V, dtype=torch.float32, device=q.device)
    BK, BV = max(16, next_power_of_2(K)), max(16, next_power_of_2(V))
    mesa_net_fused_recurrent_fwd_kernel[(N * H,)](
        q, k, v, g, beta, lamb, h_kk0, h_kv0, o, h_kk, h_kv, cu_seqlens, CG_EPS, T,
        H=H, K=K, V=V, BK=BK, BV=BV, ITERS=iters, JACOBI_INIT=jacobi, num_warps=4 if max(BK, BV) <= 64 else 8,
    )  # fmt: skip
    return o, h_kk, h_kv


def _recurrent_torch(q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, use_l2, cu_seqlens, jacobi):
    if use_l2:
        q, k = l2norm(q), l2norm(k)
    if cu_seqlens is None:
        o, h_kk, h_kv = naive_mesa_net(q, k, v, g, lamb, beta, h_kk0, h_kv0, iters, jacobi_init=jacobi)
    else:
        outs, kks, kvs = [], [], []
        bounds = cu_seqlens.tolist()
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            s0 = [None if h is None else h[i : i + 1] for h in (h_kk0, h_kv0)]
            piece = [t[:, a:b] for t in (q, k, v, g)]
            o_i, kk_i, kv_i = naive_mesa_net(*piece, lamb, beta[:, a:b], *s0, iters, jacobi_init=jacobi)
            outs.append(o_i)
            kks.append(kk_i)
            kvs.append(kv_i)
        o, h_kk, h_kv = torch.cat(outs, 1), torch.cat(kks, 0), torch.cat(kvs, 0)
    if not output_final_state:
        return o.to(v.dtype), None, None
    state_dtype = torch.promote_types(h_kk.dtype, torch.float32)
    return o.to(v.dtype), h_kk.to(state_dtype), h_kv.to(state_dtype)


def fused_recurrent_mesa_net(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    lamb: torch.Tensor,
    h_kk_init: torch.Tensor | None = None,
    h_kv_init: torch.Tensor | None = None,
    output_final_state: bool = False,
    max_CG_iteration: int = 30,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    jacobi_init: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """MesaNet by the recurrence (arguments and shapes as :func:`fla.ops.mesa_net.chunk_mesa_net`), CG per token
    from 0 (``jacobi_init``: from the Jacobi guess, see the module docstring). Inference: the Triton path has no
    backward.

    Returns:
        ``o [B, T, H, V]`` (``v.dtype``) and the final ``H^kk [N, H, K, K]``, ``H^kv [N, H, K, V]`` float32
        (``None`` unless ``output_final_state``).
    """
    check_mesa_inputs(q, k, v, g, beta, lamb, h_kk_init, h_kv_init, cu_seqlens, max_CG_iteration)
    args = (q, k, v, g, beta, lamb, h_kk_init, h_kv_init, output_final_state, int(max_CG_iteration),
            use_qk_l2norm_in_kernel, cu_seqlens, bool(jacobi_init))  # fmt: skip
    return dispatch((q, k, v, g, beta, lamb, h_kk_init, h_kv_init), _recurrent_torch, _recurrent_triton, *args)


def mesa_net_decoding_one_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    lamb: torch.Tensor,
    beta: torch.Tensor,
    prev_h_kk: torch.Tensor,
    prev_h_kv: torch.Tensor,
    max_CG_iteration: int = 30,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step (fla 0.6.0's signature and rule: CG from the Jacobi guess).

    Args:
        q, k: ``[B, H, K]``; v: ``[B, H, V]``; g, beta: ``[B, H]``; lamb: ``[H, K]``;
        prev_h_kk: ``[B, H, K, K]``; prev_h_kv: ``[B, H, K, V]``.
    Returns:
        ``o [B, H, V]`` (``q.dtype``), the new ``h_kk`` and ``h_kv`` (float32).
    """
    for name, t, dims in (("q", q, 3), ("k", k, 3), ("v", v, 3), ("g", g, 2), ("beta", beta, 2)):
        if t.dim() != dims:
            raise ValueError(f"{name} has shape {list(t.shape)}, expected {dims} dims (one decoding step)")
    o, h_kk, h_kv = fused_recurrent_mesa_net(
        q[:, None], k[:, None], v[:, None], g[:, None], beta[:, None], lamb, prev_h_kk, prev_h_kv,
        output_final_state=True, max_CG_iteration=max_CG_iteration, jacobi_init=True,
    )  # fmt: skip
    return o[:, 0].to(q.dtype), h_kk, h_kv


__all__ = ["fused_recurrent_mesa_net", "mesa_net_decoding_one_step"]
