"""Chunked MesaNet: the training path (Triton on CUDA, the PyTorch chunked form on CPU).

Forward (README.md has the maths), with ``kb = beta * k``:

1. ``H^kk`` before each chunk: the shared state recurrence (``fla.ops.common.chunk_h``) with keys ``kb``
   and values ``k``;
2. ``x_t = (H^kk_t + diag(lamb))^{-1} q_t`` by CG steps per chunk (:mod:`.cg`);
3. ``o = `` gated linear attention with queries ``x``, keys ``kb``, values ``v`` (``fla.ops.common``'s
   state recurrence and output stages; also gives the final ``H^kv``).

Backward, differentiating through the solve as an exact one (fla 0.6.0's rule; the adjoint system is the
same symmetric ``A_t``):

1. the linear-attention backward of step 3 gives ``dx, dkb, dv, dg`` and ``dH^kv_0``;
2. ``dq_t = A_t^{-1} dx_t`` (the same CG solve);
3. with the forward's products written ``x^T H^kk`` (``A_t = H^kk_t^T + diag(lamb)``), the loss reaches
   ``H^kk_t`` through ``-dq_t^T A_t x_t`` only, i.e. ``-x_t^T H^kk_t dq_t``: a linear attention with queries ``x``,
   keys ``kb``, values ``k`` and output gradient ``-dq``, whose backward gives the rest of ``dkb``, the ``dk`` of
   the values, ``dg`` and ``dH^kk_0``; ``dlamb = -sum_t dq_t * x_t``.
"""

from __future__ import annotations

import torch

from fla.ops.common.chunk import cast_like, chunk_gated_bwd
from fla.ops.common.chunk_h import chunk_fwd_h
from fla.ops.common.chunk_o import chunk_fwd_o
from fla.ops.common.chunk_torch import chunk_gated_torch
from fla.ops.common.cumsum import chunk_local_cumsum
from fla.ops.common.inputs import l2norm
from fla.ops.common.l2norm import l2norm_triton
from fla.ops.common.layout import ChunkLayout
from fla.ops.common.tuning import CHUNK_SIZE
from fla.ops.mesa_net.cg import chunk_cg_solve
from fla.ops.mesa_net.inputs import check_mesa_inputs
from fla.ops.mesa_net.naive import chunk_cg_torch, chunk_states_torch
from fla.ops.utils.varlen import pad_sequences, unpad_sequences
from fla.utils.backend import dispatch
from fla.utils.tensors import contiguous


class TritonStages:
    """The pipeline's stages on the Triton kernels (``layout``: the chunking; ``g``: the raw log decays)."""

    def __init__(self, g: torch.Tensor, layout: ChunkLayout):
        self.g, self.layout = g, layout
        self.G = chunk_local_cumsum(g, layout)

    def states(self, kb, y, h0, want_final):
        """States before each chunk ``[B, NT, H, K, V]`` (float32) and the final one (or ``None``)."""
        return chunk_fwd_h(
            kb, y, self.layout, g=self.G, h0=h0, output_final_state=want_final, states_dtype=torch.float32
        )

    def solve(self, rhs, k, beta, h_kk, lamb, iters):
        return chunk_cg_solve(rhs, k, beta, self.G, h_kk, lamb, iters, self.layout, out_dtype=k.dtype)

    def attend(self, x, kb, v, h0, want_final):
        h, ht = chunk_fwd_h(kb, v, self.layout, g=self.G, h0=h0, output_final_state=want_final)
        return chunk_fwd_o(x, kb, v, h, self.layout, 1.0, g=self.G), ht

    def attend_bwd(self, q, k, v, h0, do, dht):
        """``dq, dk, dv, dg, dh0`` of ``attend`` (``dg`` of the raw log decays, float32)."""
        return chunk_gated_bwd(q, k, v, self.g, None, None, None, 1.0, h0, do, dht, self.layout, True, h0 is not None)


class TorchStages:
    """The same stages in PyTorch on dense ``[B, T, ...]`` inputs (float32, float64 for float64 inputs)."""

    def __init__(self, g: torch.Tensor, bt: int = CHUNK_SIZE):
        self.g, self.bt = g, bt

    def states(self, kb, y, h0, want_final):
        h, ht = chunk_states_torch(kb, y, self.g, h0, self.bt)
        return h, ht if want_final else None

    def solve(self, rhs, k, beta, h_kk, lamb, iters):
        return chunk_cg_torch(rhs, k, beta, self.g, h_kk, lamb, iters, self.bt)

    def attend(self, x, kb, v, h0, want_final):
        o, ht = chunk_gated_torch(x, kb, v, g=self.g, scale=1.0, initial_state=h0, chunk_size=self.bt)
        return o, ht if want_final else None

    def attend_bwd(self, q, k, v, h0, do, dht):
        leaves = [t.detach().requires_grad_() if t is not None else None for t in (q, k, v, self.g, h0)]
        with torch.enable_grad():
            o, ht = chunk_gated_torch(*leaves[:3], g=leaves[3], scale=1.0, initial_state=leaves[4], chunk_size=self.bt)
            outs, grads = [o], [do]
            if dht is not None:
                outs.append(ht)
                grads.append(dht)
            present = [t for t in leaves if t is not None]
            got = iter(torch.autograd.grad(outs, present, grads, allow_unused=True))
        return tuple(None if t is None else next(got) for t in leaves)


def mesa_fwd(stages, q, k, v, beta, lamb, h_kk0, h_kv0, want_final, iters):
    """The forward pipeline (module docstring): ``o, H^kk_T, H^kv_T, x``."""
    kb = (k * beta[..., None]).to(k.dtype)
    h_kk, ht_kk = stages.states(kb, k, h_kk0, want_final)
    x = stages.solve(q, k, beta, h_kk, lamb, iters)
    o, ht_kv = stages.attend(x, kb, v, h_kv0, want_final)
    return o, ht_kk, ht_kv, x


def mesa_bwd(stages, k, v, beta, lamb, h_kk0, h_kv0, x, do, dht_kk, dht_kv, iters):
    """The backward pipeline (module docstring): ``dq, dk, dv, dg, dbeta, dlamb, dh_kk0, dh_kv0`` (float32 at
    least; the caller casts them)."""
    kb = (k * beta[..., None]).to(k.dtype)
    dx, dkb, dv, dg, dh_kv0 = stages.attend_bwd(x, kb, v, h_kv0, do, dht_kv)
    h_kk, _ = stages.states(kb, k, h_kk0, False)
    dq = stages.solve(dx.to(k.dtype), k, beta, h_kk, lamb, iters)
    # the forward's products are x^T H^kk (A = H^kk^T + diag(lamb)): -dq^T A x = x^T H^kk (-dq) + ...
    _, dkb2, dk, dg2, dh_kk0 = stages.attend_bwd(x, kb, k, h_kk0, (-dq).to(k.dtype), dht_kk)
    dkb = dkb.float() + dkb2.float()
    dk = dk.float() + dkb * beta[..., None].float()
    dbeta = (dkb * k.float()).sum(-1)
    dlamb = -(dq.float() * x.float()).sum((0, 1))
    return dq, dk, dv, dg.float() + dg2.float(), dbeta, dlamb, dh_kk0, dh_kv0


class ChunkMesaNetFunction(torch.autograd.Function):
    """MesaNet's chunk pipeline (Triton stages on a :class:`ChunkLayout`, or PyTorch stages on dense inputs)."""

    @staticmethod
    @contiguous
    def forward(ctx, q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, cu_seqlens, backend):
        stages = (
            TritonStages(g, ChunkLayout.build(q, cu_seqlens, CHUNK_SIZE)) if backend == "triton" else TorchStages(g)
        )
        o, ht_kk, ht_kv, x = mesa_fwd(stages, q, k, v, beta, lamb, h_kk0, h_kv0, output_final_state, iters)
        ctx.save_for_backward(k, v, g, beta, lamb, h_kk0, h_kv0, x)
        ctx.iters, ctx.stages, ctx.q_dtype = iters, stages, q.dtype
        return o.to(v.dtype), ht_kk, ht_kv

    @staticmethod
    @contiguous
    def backward(ctx, do, dht_kk, dht_kv):
        k, v, g, beta, lamb, h_kk0, h_kv0, x = ctx.saved_tensors
        dq, dk, dv, dg, dbeta, dlamb, dh_kk0, dh_kv0 = mesa_bwd(
            ctx.stages, k, v, beta, lamb, h_kk0, h_kv0, x, do, dht_kk, dht_kv, ctx.iters
        )
        return (
            dq.to(ctx.q_dtype), cast_like(dk, k), cast_like(dv, v), cast_like(dg, g), cast_like(dbeta, beta),
            cast_like(dlamb, lamb), cast_like(dh_kk0, h_kk0), cast_like(dh_kv0, h_kv0), None, None, None, None,
        )  # fmt: skip


def _chunk_torch(q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, use_l2, cu_seqlens):
    """The PyTorch path: varlen rows padded to a dense batch (zero keys / decays past each end change nothing)."""
    if use_l2:
        q, k = l2norm(q), l2norm(k)
    if cu_seqlens is None:
        return ChunkMesaNetFunction.apply(
            q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, None, "torch"
        )
    q, k, v, g, beta = (pad_sequences(t, cu_seqlens) for t in (q, k, v, g, beta))
    o, ht_kk, ht_kv = ChunkMesaNetFunction.apply(
        q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, None, "torch"
    )
    return unpad_sequences(o, cu_seqlens), ht_kk, ht_kv


def _chunk_triton(q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, use_l2, cu_seqlens):
    if use_l2:
        q, k = l2norm_triton(q), l2norm_triton(k)
    return ChunkMesaNetFunction.apply(
        q, k, v, g, beta, lamb, h_kk0, h_kv0, output_final_state, iters, cu_seqlens, "triton"
    )


def chunk_mesa_net(
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
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """MesaNet, chunked (fla 0.6.0's signature): per token ``o_t = (H^kv_t)^T (H^kk_t + diag(lamb))^{-1} q_t``
    with ``H^kk_t = exp(g_t) H^kk_{t-1} + beta_t k_t k_t^T``, ``H^kv_t = exp(g_t) H^kv_{t-1} + beta_t k_t v_t^T``,
    the solve by ``max_CG_iteration`` conjugate-gradient steps from 0.

    Args:
        q, k: ``[B, T, H, K]`` (keys L2-normalized, or ``use_qk_l2norm_in_kernel``); v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` log decays (``<= 0``); beta: ``[B, T, H]``; lamb: ``[H, K]`` (positive).
        h_kk_init: ``[N, H, K, K]`` (symmetric), h_kv_init: ``[N, H, K, V]`` initial states (float32 recommended).
        output_final_state: also return both final states (float32).
        max_CG_iteration: CG steps per token (the backward runs as many for the adjoint solve).
        use_qk_l2norm_in_kernel: L2-normalize q and k first (differentiably).
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``);
        cu_seqlens_cpu: accepted for fla compatibility (unused).
    Returns:
        ``o [B, T, H, V]`` (``v.dtype``), ``H^kk_T [N, H, K, K]`` and ``H^kv_T [N, H, K, V]`` (``None`` unless
        ``output_final_state``).
    """
    del cu_seqlens_cpu
    check_mesa_inputs(q, k, v, g, beta, lamb, h_kk_init, h_kv_init, cu_seqlens, max_CG_iteration)
    args = (q, k, v, g, beta, lamb, h_kk_init, h_kv_init, output_final_state, int(max_CG_iteration),
            use_qk_l2norm_in_kernel, cu_seqlens)  # fmt: skip
    return dispatch((q, k, v, g, beta, lamb, h_kk_init, h_kv_init), _chunk_torch, _chunk_triton, *args)


__all__ = ["ChunkMesaNetFunction", "chunk_mesa_net"]
