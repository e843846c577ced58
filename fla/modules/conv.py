"""Short causal depthwise convolution (``ShortConvolution``) with Triton forward/backward.

Math, per channel ``d`` and per sequence (positions ``t = 0 .. L-1``), kernel width ``W``::

    z[t] = bias + sum_k weight[d, k] * xe[t - (W - 1 - k)]     (k = 0 .. W-1)
    y[t] = act(z[t]) + residual[t]                              (act: SiLU or identity)

``xe`` is the input extended to the left by the conv state: ``xe[t] = x[t]`` for ``t >= 0`` and
``xe[t] = state[d, W + t]`` for ``-W <= t < 0`` (zero without a state). The state layout is
``[N, D, W]`` holding the last ``W`` inputs of each sequence, oldest first; only its last
``W - 1`` columns feed the next output, column 0 is kept so one-token decoding can roll it.
Final states are returned in the initial state's dtype when one is given, else in ``x.dtype``
(they hold raw inputs, so ``x.dtype`` loses nothing).

Backward (``dz = dy * act'(z)``)::

    dxe[t]          = sum_j weight[d, W - 1 - j] * dz[t + j]  (+ d final_state at t = L - W + c)
    dweight[d, k]   = sum_t dz[t] * xe[t - (W - 1 - k)],   dbias = sum_t dz[t],   dresidual = dy
    dx = dxe[0 .. L-1],   d initial_state[:, :, W + t] = dxe[t] for t = -W .. -1

The Triton backward recomputes ``z`` instead of saving it, so the forward saves only its inputs; it
writes ``dz`` once (in ``dy``'s dtype) and takes ``dx``, ``dweight`` and the initial state's gradient
from it (``dweight[:, k] = sum_p dz[p + W - 1 - k] xe[p]``: the dx pass's shifted dz tiles against xe).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import triton
import triton.language as tl

from fla.ops.common.indexing import token_bounds
from fla.ops.utils import prepare_chunk_indices, prepare_lens, prepare_position_ids, prepare_sequence_ids
from fla.utils import IS_TRITON_INTERPRET, check_cu_seqlens, check_shape, empty, select_backend
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

_ACTIVATIONS = (None, "silu", "swish")
# Time rows per program. Fixed (not autotuned) because varlen chunk indices depend on it.
_BT = 16 if IS_TRITON_INTERPRET else 64


def _configs() -> list[triton.Config]:
    if IS_TRITON_INTERPRET:
        return [triton.Config({"BD": 32}, num_warps=4)]
    return [triton.Config({"BD": bd}, num_warps=nw) for bd in (64, 128) for nw in (4, 8)]


_HEURISTICS = {
    "HAS_BIAS": lambda args: args["b"] is not None,
    "USE_INITIAL_STATE": lambda args: args["h0"] is not None,
    "IS_VARLEN": lambda args: args["cu_seqlens"] is not None,
}


# ----------------------------------------------------------------------------- Triton helpers


@triton.jit
def _locate_chunk(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN: tl.constexpr):
    """(i_n, i_c, bos, L): sequence index, chunk index within it, its first row and length."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
    else:
        i_n = i_b
        i_c = i_t
    bos, L = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    return i_n, i_c, bos, L


@triton.jit
def _load_input(x, h0, o_s, o_d, m_d, i_n, bos, L, D, W: tl.constexpr, USE_INITIAL_STATE: tl.constexpr):
    """xe at sequence positions ``o_s`` [R] and channels ``o_d`` [BD] -> [R, BD] float32."""
    m_x = ((o_s >= 0) & (o_s < L))[:, None] & m_d[None, :]
    p_x = x + (bos + o_s)[:, None] * D + o_d[None, :]
    b_x = tl.load(p_x, mask=m_x, other=0.0).to(tl.float32)  # [R, BD]
    if USE_INITIAL_STATE:
        m_h = ((o_s < 0) & (o_s >= -W))[:, None] & m_d[None, :]
        p_h = h0 + (i_n * D + o_d[None, :]) * W + (W + o_s)[:, None]
        b_x += tl.load(p_h, mask=m_h, other=0.0).to(tl.float32)  # [R, BD]
    return b_x


@triton.jit
def _conv_z(
    x, w, b, h0, o_p, o_d, m_d, i_n, bos, L, D,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
):  # fmt: skip
    """Pre-activation z at positions ``o_p`` [R] -> [R, BD] float32."""
    b_z = tl.zeros([o_p.shape[0], o_d.shape[0]], dtype=tl.float32)  # [R, BD]
    for k in tl.static_range(W):
        b_w = tl.load(w + o_d * W + k, mask=m_d, other=0.0).to(tl.float32)  # [BD]
        b_x = _load_input(x, h0, o_p - (W - 1 - k), o_d, m_d, i_n, bos, L, D, W, USE_INITIAL_STATE)
        b_z += b_x * b_w[None, :]
    if HAS_BIAS:
        b_z += tl.load(b + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    return b_z


@triton.jit
def _conv_dz(
    x, w, b, h0, dy, o_p, o_d, m_d, i_n, bos, L, D,
    W: tl.constexpr, USE_SILU: tl.constexpr, HAS_BIAS: tl.constexpr, USE_INITIAL_STATE: tl.constexpr,
):  # fmt: skip
    """dz = dy * act'(z) at positions ``o_p`` [R] (zero outside [0, L)) -> [R, BD] float32."""
    m_p = ((o_p >= 0) & (o_p < L))[:, None] & m_d[None, :]
    b_dz = tl.load(dy + (bos + o_p)[:, None] * D + o_d[None, :], mask=m_p, other=0.0).to(tl.float32)  # [R, BD]
    if USE_SILU:
        b_z = _conv_z(x, w, b, h0, o_p, o_d, m_d, i_n, bos, L, D, W, HAS_BIAS, USE_INITIAL_STATE)
        b_sig = tl.sigmoid(b_z)
        b_dz = b_dz * b_sig * (1.0 + b_z * (1.0 - b_sig))
    return b_dz


@triton.jit
def _dxe_from_dz(
    dz, w, dht, dw, b_xe, o_p, o_d, m_d, i_n, i_part, bos, L, D, W: tl.constexpr, HAS_DHT: tl.constexpr,
):  # fmt: skip
    """Gradient of the extended input xe at positions ``o_p`` [R] from dz [T, D] rows -> [R, BD] float32.

    It also stores row ``i_part`` of the dweight partial sums ``[*, D, W]``:
    ``dweight[:, k] = sum_t dz[t] xe[t - (W - 1 - k)] = sum_p dz[p + j] xe[p]`` with ``j = W - 1 - k``,
    so the shifted dz tiles this function loads anyway meet ``b_xe`` (xe at ``o_p``, zero where
    these rows must not count) and no input window is loaded again.
    """
    b_dxe = tl.zeros([o_p.shape[0], o_d.shape[0]], dtype=tl.float32)  # [R, BD]
    for j in tl.static_range(W):
        b_w = tl.load(w + o_d * W + (W - 1 - j), mask=m_d, other=0.0).to(tl.float32)  # [BD]
        o_s = o_p + j  # [R]
        m_s = ((o_s >= 0) & (o_s < L))[:, None] & m_d[None, :]
        b_dz = tl.load(dz + (bos + o_s)[:, None] * D + o_d[None, :], mask=m_s, other=0.0).to(tl.float32)
        b_dxe += b_dz * b_w[None, :]
        tl.store(dw + (i_part * D + o_d) * W + (W - 1 - j), tl.sum(b_dz * b_xe, axis=0), mask=m_d)
    if HAS_DHT:
        # the final state's column c holds xe[L - W + c]
        o_c = o_p - L + W  # [R]
        m_c = ((o_c >= 0) & (o_c < W))[:, None] & m_d[None, :]
        p_c = dht + (i_n * D + o_d[None, :]) * W + o_c[:, None]
        b_dxe += tl.load(p_c, mask=m_c, other=0.0).to(tl.float32)
    return b_dxe


# ----------------------------------------------------------------------------- Triton kernels


@lean_launch
@triton.heuristics({**_HEURISTICS, "HAS_RESIDUAL": lambda args: args["r"] is not None})
@triton.autotune(configs=_configs(), key=["D", "W"])
@triton.jit
def causal_conv1d_fwd_kernel(
    x, w, b, r, h0, y, cu_seqlens, chunk_indices, T, D,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, USE_SILU: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_n, i_c, bos, L = _locate_chunk(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)  # [BT] positions in the sequence
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    b_y = _conv_z(x, w, b, h0, o_t, o_d, m_d, i_n, bos, L, D, W, HAS_BIAS, USE_INITIAL_STATE)  # [BT, BD]
    if USE_SILU:
        b_y = b_y * tl.sigmoid(b_y)
    m_y = (o_t < L)[:, None] & m_d[None, :]
    o_y = (bos + o_t)[:, None] * D + o_d[None, :]  # [BT, BD]
    if HAS_RESIDUAL:
        b_y += tl.load(r + o_y, mask=m_y, other=0.0).to(tl.float32)
    tl.store(y + o_y, b_y.to(y.dtype.element_ty), mask=m_y)


@lean_launch
@triton.heuristics({k: _HEURISTICS[k] for k in ("USE_INITIAL_STATE", "IS_VARLEN")})
@triton.autotune(configs=_configs(), key=["D", "W"])
@triton.jit
def causal_conv1d_final_state_fwd_kernel(
    x, h0, ht, cu_seqlens, T, D,
    W: tl.constexpr, BW: tl.constexpr, BD: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, L = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_c = tl.arange(0, BW)  # [BW] state columns; column c holds xe[L - W + c]
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    b_h = _load_input(x, h0, L - W + o_c, o_d, m_d, i_n, bos, L, D, W, USE_INITIAL_STATE)  # [BW, BD]
    p_h = ht + (i_n * D + o_d[None, :]) * W + o_c[:, None]
    tl.store(p_h, b_h.to(ht.dtype.element_ty), mask=(o_c < W)[:, None] & m_d[None, :])


@lean_launch
@triton.heuristics(_HEURISTICS)
@triton.autotune(configs=_configs(), key=["D", "W"])
@triton.jit
def causal_conv1d_dz_bwd_kernel(
    x, w, b, h0, dy, dz, db, cu_seqlens, chunk_indices, T, D,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, USE_SILU: tl.constexpr, HAS_BIAS: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """dz for one [BT, BD] tile (stored only with SiLU: else dz is dy) and this tile's partial sum of dbias [D]."""
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_n, i_c, bos, L = _locate_chunk(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)  # [BT]
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D

    b_dz = _conv_dz(x, w, b, h0, dy, o_t, o_d, m_d, i_n, bos, L, D, W, USE_SILU, HAS_BIAS, USE_INITIAL_STATE)
    if USE_SILU:
        m_t = (o_t < L)[:, None] & m_d[None, :]
        tl.store(dz + (bos + o_t)[:, None] * D + o_d[None, :], b_dz.to(dz.dtype.element_ty), mask=m_t)
    if HAS_BIAS:
        i_part = i_b * tl.num_programs(1) + i_t  # row of the partial-sum buffer
        tl.store(db + i_part * D + o_d, tl.sum(b_dz, axis=0), mask=m_d)


@lean_launch
@triton.heuristics({k: _HEURISTICS[k] for k in ("IS_VARLEN",)} | {"HAS_DHT": lambda args: args["dht"] is not None})
@triton.autotune(configs=_configs(), key=["D", "W"])
@triton.jit
def causal_conv1d_dx_bwd_kernel(
    x, dz, w, dht, dx, dw, cu_seqlens, chunk_indices, T, D,
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """dx for one [BT, BD] tile (the transposed convolution of dz, plus the final state's gradient) and
    this tile's partial sums of dweight [D, W] over the input rows it holds."""
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    i_part = i_b * tl.num_programs(1) + i_t  # row of the partial-sum buffer
    i_n, i_c, bos, L = _locate_chunk(i_t, i_b, T, cu_seqlens, chunk_indices, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)  # [BT]
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    o_x = (bos + o_t)[:, None] * D + o_d[None, :]  # [BT, BD]
    m_x = (o_t < L)[:, None] & m_d[None, :]
    b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(tl.float32)
    b_dx = _dxe_from_dz(dz, w, dht, dw, b_x, o_t, o_d, m_d, i_n, i_part, bos, L, D, W, HAS_DHT)
    tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_x)


@lean_launch
@triton.heuristics({"HAS_DHT": lambda args: args["dht"] is not None})
@triton.autotune(configs=_configs(), key=["D", "W"])
@triton.jit
def causal_conv1d_initial_state_bwd_kernel(
    h0, dz, w, dht, dh0, dw, cu_seqlens, T, D,
    W: tl.constexpr, BW: tl.constexpr, BD: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """d initial_state[i_n] (the gradient of xe at the state positions -W .. -1) and row ``i_n`` of the
    dweight partial sums ``dw`` over those positions (the dx kernel counts positions >= 0)."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    bos, L = token_bounds(i_n, cu_seqlens, T, IS_VARLEN)
    o_p = tl.arange(0, BW) - W  # [BW] positions -W .. BW-W-1; only the negative ones are state
    o_d = i_d * BD + tl.arange(0, BD)  # [BD]
    m_d = o_d < D
    o_h = (i_n * D + o_d[None, :]) * W + (W + o_p)[:, None]  # [BW, BD] offsets in a [N, D, W] state
    m_h = (o_p < 0)[:, None] & m_d[None, :]
    b_h = tl.load(h0 + o_h, mask=m_h, other=0.0).to(tl.float32)
    b_dh = _dxe_from_dz(dz, w, dht, dw, b_h, o_p, o_d, m_d, i_n, i_n, bos, L, D, W, HAS_DHT)  # [BW, BD]
    tl.store(dh0 + o_h, b_dh.to(dh0.dtype.element_ty), mask=m_h)


# ----------------------------------------------------------------------------- Triton launchers


def _grid_rows(x: torch.Tensor, chunk_indices: torch.Tensor | None) -> tuple[int, int]:
    """(number of time tiles per row, rows of the grid) for the tiled kernels."""
    B, T, _ = x.shape
    if chunk_indices is not None:
        return chunk_indices.shape[0], 1
    return cdiv(T, _BT), B


def _num_sequences(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> int:
    return x.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1


def _triton_fwd(x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens, chunk_indices):
    B, T, D = x.shape
    W = weight.shape[1]
    y = empty(B, T, D, dtype=x.dtype, device=x.device)
    NT, NB = _grid_rows(x, chunk_indices)
    if NT > 0:
        causal_conv1d_fwd_kernel[lambda meta: (cdiv(D, meta["BD"]), NT, NB)](
            x, weight, bias, residual, initial_state, y, cu_seqlens, chunk_indices, T, D,
            W=W, BT=_BT, USE_SILU=use_silu,
        )  # fmt: skip
    final_state = None
    if output_final_state:
        N = _num_sequences(x, cu_seqlens)
        dtype = initial_state.dtype if initial_state is not None else x.dtype
        final_state = empty(N, D, W, dtype=dtype, device=x.device)
        causal_conv1d_final_state_fwd_kernel[lambda meta: (cdiv(D, meta["BD"]), N)](
            x, initial_state, final_state, cu_seqlens, T, D, W=W, BW=next_power_of_2(W)
        )
    return y, final_state


def _triton_bwd(x, weight, bias, initial_state, dy, dht, use_silu, cu_seqlens, chunk_indices):
    # Two passes: dz = dy * act'(z) once per position (and the dbias partial sums), then dx as the
    # transposed convolution of dz, whose shifted dz tiles also give dweight against the unshifted input
    # (one input load per tile instead of W). One pass would recompute dz W times per tile.
    B, T, D = x.shape
    W = weight.shape[1]
    NT, NB = _grid_rows(x, chunk_indices)
    # dz in dy's dtype: the precision the incoming gradient has (dbias uses the float32 tile)
    dz = empty(B, T, D, dtype=dy.dtype, device=x.device) if use_silu else dy
    dx = empty(B, T, D, dtype=x.dtype, device=x.device)
    N = _num_sequences(x, cu_seqlens)
    # dweight partial sums: a row per time tile, then (with a state) a row per sequence for positions < 0
    dw_part = empty(NB * NT + (N if initial_state is not None else 0), D, W, dtype=torch.float32, device=x.device)
    db_part = empty(NB * NT, D, dtype=torch.float32, device=x.device) if bias is not None else None
    if NT > 0:
        if use_silu or bias is not None:  # else dz is dy and there is no dbias
            causal_conv1d_dz_bwd_kernel[lambda meta: (cdiv(D, meta["BD"]), NT, NB)](
                x, weight, bias, initial_state, dy, dz, db_part, cu_seqlens, chunk_indices, T, D,
                W=W, BT=_BT, USE_SILU=use_silu,
            )  # fmt: skip
        causal_conv1d_dx_bwd_kernel[lambda meta: (cdiv(D, meta["BD"]), NT, NB)](
            x, dz, weight, dht, dx, dw_part, cu_seqlens, chunk_indices, T, D, W=W, BT=_BT
        )
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    dh0 = None
    if initial_state is not None:
        dh0 = empty(N, D, W, dtype=initial_state.dtype, device=x.device)
        causal_conv1d_initial_state_bwd_kernel[lambda meta: (cdiv(D, meta["BD"]), N)](
            initial_state, dz, weight, dht, dh0, dw_part[NB * NT :], cu_seqlens, T, D,
            W=W, BW=next_power_of_2(W), IS_VARLEN=cu_seqlens is not None,
        )  # fmt: skip
    return dx, dw_part.sum(0).to(weight.dtype), db, dh0


class CausalConv1dFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; inputs must be contiguous."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens):
        chunk_indices = prepare_chunk_indices(cu_seqlens, _BT) if cu_seqlens is not None else None
        y, final_state = _triton_fwd(
            x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens, chunk_indices
        )
        ctx.save_for_backward(x, weight, bias, initial_state, cu_seqlens, chunk_indices)
        ctx.use_silu = use_silu
        ctx.residual_dtype = residual.dtype if residual is not None else None
        return y, final_state

    @staticmethod
    def backward(ctx, dy, dht):
        x, weight, bias, initial_state, cu_seqlens, chunk_indices = ctx.saved_tensors
        dy = dy.contiguous()
        dht = dht.contiguous() if dht is not None else None
        dx, dw, db, dh0 = _triton_bwd(x, weight, bias, initial_state, dy, dht, ctx.use_silu, cu_seqlens, chunk_indices)
        dr = dy.to(ctx.residual_dtype) if ctx.residual_dtype is not None else None
        return dx, dw, db, dr, dh0, None, None, None


# ----------------------------------------------------------------------------- PyTorch path


def _torch_causal_conv1d(x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens):
    """Pure-PyTorch twin of the Triton path (autograd gives the backward)."""
    B, T, D = x.shape
    W = weight.shape[1]
    if cu_seqlens is None:  # B rows of T: positions and row ids without a data-dependent size (compile traces it)
        cu_seqlens = torch.arange(0, B * T + 1, T, device=x.device)
        pos = torch.arange(T, device=x.device).repeat(B)  # [B*T]
        seq = torch.arange(B, device=x.device).repeat_interleave(T)  # [B*T]
    else:
        pos = prepare_position_ids(cu_seqlens)  # [B*T]
        seq = prepare_sequence_ids(cu_seqlens)  # [B*T]
    cu_seqlens = cu_seqlens.long()
    compute = torch.promote_types(x.dtype, torch.float32)
    xf = x.reshape(B * T, D).to(compute)
    rows = torch.arange(B * T, device=x.device)

    def extended(idx_seq: torch.Tensor, p: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """xe at positions p [M] of sequences idx_seq [M] (start: their first packed row) -> [M, D]."""
        from_x = (p >= 0).unsqueeze(-1)
        out = torch.where(from_x, xf[(start + p).clamp(0, B * T - 1)], 0.0)
        if initial_state is not None:
            h = initial_state[idx_seq, :, (W + p).clamp(0, W - 1)].to(compute)  # [M, D]
            out = out + torch.where(~from_x & (p >= -W).unsqueeze(-1), h, 0.0)
        return out

    z = torch.zeros(B * T, D, dtype=compute, device=x.device)
    for k in range(W):
        z = z + extended(seq, pos - (W - 1 - k), rows - pos) * weight[:, k].to(compute)
    if bias is not None:
        z = z + bias.to(compute)
    y = z * torch.sigmoid(z) if use_silu else z
    if residual is not None:
        y = y + residual.reshape(B * T, D).to(compute)
    y = y.to(x.dtype).reshape(B, T, D)

    final_state = None
    if output_final_state:
        lens = prepare_lens(cu_seqlens)
        N = lens.numel()
        ids = torch.arange(N, device=x.device)
        cols = [extended(ids, lens - W + c, cu_seqlens[:-1]) for c in range(W)]  # W x [N, D]
        dtype = initial_state.dtype if initial_state is not None else x.dtype
        final_state = torch.stack(cols, -1).to(dtype)
    return y, final_state


# ----------------------------------------------------------------------------- public API


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    activation: str | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal depthwise conv1d over time: ``y = act(conv(x) + bias) + residual``.

    Args:
        x: ``[B, T, D]`` input (varlen: ``B == 1`` and ``cu_seqlens``).
        weight: ``[D, W]`` depthwise filters; ``weight[:, -1]`` multiplies the current token.
        bias: optional ``[D]``.
        residual: optional ``[B, T, D]``, added after the activation.
        initial_state: optional ``[N, D, W]`` conv state per sequence (the last ``W`` inputs
            before it, oldest first; ``N = B`` or the number of sequences in ``cu_seqlens``).
        output_final_state: also return the ``[N, D, W]`` state after each sequence (in the
            initial state's dtype, else ``x.dtype``); works for sequences shorter than ``W``.
        activation: ``None``, ``"silu"`` or ``"swish"`` (same as silu).
        cu_seqlens: optional ``[N+1]`` int32/int64 sequence boundaries; sequences never see
            each other's tokens.
    Returns:
        ``(y [B, T, D] in x.dtype, final_state [N, D, W] or None)``.
    """
    if x.dim() != 3:
        raise ValueError(f"x has shape {list(x.shape)}, expected 3-D [B, T, D]")
    B, T, D = x.shape
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(f"weight has shape {list(weight.shape)}, expected [{D}, W] (x has shape {list(x.shape)})")
    W = weight.shape[1]
    if bias is not None:
        check_shape("bias", bias, (D,), "[D]")
    if residual is not None:
        check_shape("residual", residual, (B, T, D), "[B, T, D] like x")
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    if initial_state is not None:
        check_shape("initial_state", initial_state, (_num_sequences(x, cu_seqlens), D, W), "[N, D, W]")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {_ACTIVATIONS}")
    use_silu = activation is not None

    if select_backend(x, weight, bias, residual, initial_state) == "torch":
        return _torch_causal_conv1d(x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens)
    x, weight = x.contiguous(), weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    residual = residual.contiguous() if residual is not None else None
    initial_state = initial_state.contiguous() if initial_state is not None else None
    return CausalConv1dFunction.apply(
        x, weight, bias, residual, initial_state, output_final_state, use_silu, cu_seqlens
    )


class ShortConvolution(nn.Conv1d):
    """Causal depthwise short convolution over time (fla-compatible parameters).

    Parameters are those of ``nn.Conv1d(D, D, W, groups=D)``: ``weight [D, 1, W]`` and an
    optional ``bias [D]``, so fla checkpoints load unchanged.
    """

    def __init__(
        self,
        hidden_size: int,
        kernel_size: int,
        bias: bool = False,
        activation: str | None = "silu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str | None = None,
    ):
        # backend: fla 0.6.0's choice between its Triton kernel and the causal_conv1d package; accepted, ours picks
        # its own path (fla.utils.backend)
        if backend not in (None, "triton", "cuda"):
            raise ValueError(f"ShortConvolution: backend={backend!r} is not one of (None, 'triton', 'cuda')")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {_ACTIVATIONS}")
        super().__init__(
            hidden_size,
            hidden_size,
            kernel_size,
            groups=hidden_size,
            padding=kernel_size - 1,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.hidden_size = hidden_size
        self.activation = activation

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}"

    @property
    def state_size(self) -> int:
        """Number of values in one sequence's conv state (``D * W``)."""
        return self.hidden_size * self.kernel_size[0]

    def _check_cache(self, cache: torch.Tensor, n: int) -> None:
        check_shape("cache", cache, (n, self.hidden_size, self.kernel_size[0]), "[N, D, W]")

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        output_final_state: bool = False,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convolve ``x [B, T, D]``.

        Args:
            residual: optional ``[B, T, D]`` added after the activation.
            mask: optional ``[B, T]`` (1 = keep): padded positions of ``x`` are zeroed first.
            cache: optional ``[N, D, W]`` conv state to start from (not modified; the new
                state is returned when ``output_final_state``).
            cu_seqlens: optional ``[N+1]`` boundaries of the sequences packed in ``B == 1``.
        Returns:
            ``(y [B, T, D], final_state [N, D, W] or None)``.
        """
        if x.dim() != 3:
            raise ValueError(f"x has shape {list(x.shape)}, expected 3-D [B, T, D]")
        if mask is not None:
            check_shape("mask", mask, x.shape[:2], "[B, T]")
            x = x * mask.unsqueeze(-1).to(x.dtype)
        if cache is not None:
            n = x.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
            self._check_cache(cache, n)
        return causal_conv1d(
            x,
            self.weight[:, 0],
            self.bias,
            residual,
            cache,
            output_final_state,
            self.activation,
            cu_seqlens,
        )

    @torch.no_grad()
    def step(
        self, x: torch.Tensor, cache: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding token per sequence; updates ``cache`` in place.

        Args:
            x: ``[B, 1, D]`` or ``[B, D]``.
            cache: ``[B, D, W]`` conv state (e.g. from ``forward(..., output_final_state=True)``).
            residual: optional, shaped like ``x``.
        Returns:
            ``(y shaped like x, cache)``.
        """
        if x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[1] != 1):
            raise ValueError(f"x has shape {list(x.shape)}, expected [B, 1, D] or [B, D]")
        self._check_cache(cache, x.shape[0])
        x3 = x.reshape(x.shape[0], 1, x.shape[-1])
        r3 = residual.reshape(x3.shape) if residual is not None else None
        y, new_state = causal_conv1d(x3, self.weight[:, 0], self.bias, r3, cache, True, self.activation)
        cache.copy_(new_state)
        return y.reshape(x.shape), cache
