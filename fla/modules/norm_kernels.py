"""Triton kernels shared by every fused norm of :mod:`fla.modules` (RMS / Layer / Group, gated or not).

One kernel pair serves all of them. A row ``x[n, :D]`` is split into ``G`` groups of ``DG = D / G``
features; each group is normalized on its own (``G = 1`` is LayerNorm / RMSNorm), while the affine
``weight`` / ``bias`` run over the full ``D``. Optional pieces are switched by constexpr flags:

* residual: ``h = x + residual`` (fp32 add, then rounded to the residual-stream dtype) is normalized
  and stored when the caller needs it (prenorm output, or for the backward);
* gate: ``y = (xhat * w + b) * act(g)`` with ``act`` in {swish, sigmoid} (the gated norms);
* gate first (Mamba2's ``norm_before_gate=False``): ``x * act(g)`` is formed in fp32 registers and
  normalized; the backward reloads ``x`` and ``g`` and forms it again, so only the inputs are saved
  (not the fp32 product).

Forward grid: ``(cdiv(N, BT), G)``, one ``[BT, BD]`` tile (``BT`` rows, the whole group in registers)
per program. Backward grid: ``(NP, G)`` persistent programs (a few per SM); each walks a contiguous
range of row tiles, keeps its ``dw`` / ``db`` sums in fp32 registers and writes them once to a
``[NP, D]`` fp32 buffer, which :func:`norm_bwd_reduce_kernel` sums over ``NP`` and casts.

Host cost matters as much as the kernels here: at ``[16384, 2048]`` one kernel runs ~35-70 us while a
Triton launch costs ~15-30 us of Python. So the launch shapes are fixed, cached functions of the
group width (:func:`fwd_config`, :func:`bwd_config`; measured on an H200, see
``benchmarks/results/modules.md``) rather than autotuned, and the optional-input flags are passed
explicitly instead of through ``@triton.heuristics`` (which rebuilds the argument dict once per flag
on every launch: ~2.5 us each, measured).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fla.utils import empty, empty_like
from fla.utils.caching import host_cache
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

# Largest group width one program keeps in registers (fp32 tiles of a full group).
MAX_GROUP_WIDTH = 32768
_MAX_ROWS_PER_TILE = 16
# Backward: persistent programs per SM (fewer leave the memory system idle, more add partial sums).
_BWD_PROGRAMS_PER_SM = 4


class TileConfig(NamedTuple):
    """One launch's shape: ``[BT, BD]`` tiles (``BD`` = the group width rounded up to a power of two)."""

    BT: int
    BD: int
    num_warps: int


def _rows_per_tile(block: int) -> int:
    """Rows per ~2048-element tile: 1 for groups of 2048+ features, up to 16 for small groups."""
    return max(1, min(_MAX_ROWS_PER_TILE, 2048 // block))


@host_cache
def fwd_config(group_width: int) -> TileConfig:
    """Forward: ~2048-element tiles, 16 elements a thread (D=2048: 4 warps, D=4096: 8; best on H200)."""
    bd = next_power_of_2(group_width)
    bt = _rows_per_tile(bd)
    return TileConfig(bt, bd, max(1, min(32, bt * bd // 512)))


@host_cache
def bwd_config(group_width: int, gated: bool = False) -> TileConfig:
    """Backward: ~2048-element tiles, 8 elements a thread up to 4096 features (D=2048: 8 warps,
    D=4096: 16), ~16 beyond. A gated 4096-wide group runs faster with 8 warps (measured on H200)."""
    bd = next_power_of_2(group_width)
    bt = _rows_per_tile(bd)
    tile = bt * bd
    if tile <= 4096:
        num_warps = 8 if gated and tile == 4096 else max(1, tile // 256)
    else:
        num_warps = min(32, tile // 512)
    return TileConfig(bt, bd, num_warps)


@host_cache(maxsize=1024)  # one entry per row count: varlen batches bring new ones
def _bwd_grid(n_rows: int, group_width: int, num_groups: int, device: torch.device) -> tuple[int, int]:
    """``(NP, BPP)``: programs per group and row tiles per program (~``_BWD_PROGRAMS_PER_SM`` per SM)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    n_tiles = cdiv(n_rows, bwd_config(group_width).BT)
    n_prog = max(1, min(n_tiles, cdiv(sms * _BWD_PROGRAMS_PER_SM, num_groups)))
    bpp = max(1, cdiv(n_tiles, n_prog))
    return max(1, cdiv(n_tiles, bpp)), bpp


@triton.jit
def _act_fwd(b_g, ACT: tl.constexpr):
    """``act(g)`` on an fp32 tile ``[BT, BD]``."""
    b_s = tl.sigmoid(b_g)
    if ACT == "swish":
        b_a = b_g * b_s
    else:
        b_a = b_s
    return b_a


@triton.jit
def _act_bwd(b_g, ACT: tl.constexpr):
    """``d act(g) / dg`` on an fp32 tile ``[BT, BD]``."""
    b_s = tl.sigmoid(b_g)
    if ACT == "swish":
        b_da = b_s * (1.0 + b_g * (1.0 - b_s))
    else:
        b_da = b_s * (1.0 - b_s)
    return b_da


@lean_launch
@triton.jit
def norm_fwd_kernel(
    x,  # [N, D]
    res,  # [N, D] or None
    g,  # [N, D] or None
    w,  # [D] or None
    b,  # [D] or None
    y,  # [N, D]
    h,  # [N, D] or None: x + res in the residual-stream dtype
    mean,  # [N, G] fp32 (LayerNorm only)
    rstd,  # [N, G] fp32
    eps,
    N,
    D,
    DG,
    G,
    IS_RMS: tl.constexpr,
    ACT: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    HAS_RES: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    STORE_H: tl.constexpr,
    GATE_FIRST: tl.constexpr = False,
):
    eps = tl.cast(eps, tl.float32)  # fp32 scalars: torch.compile passes Python floats as fp64
    i_t, i_g = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_r = tl.arange(0, BT)  # [BT] rows within the tile
    o_d = tl.arange(0, BD)  # [BD] features within the group
    o_t = i_t * BT + o_r  # [BT] rows
    m_t, m_d = o_t < N, o_d < DG
    m_x = m_t[:, None] & m_d[None, :]  # [BT, BD]
    # int64 scalar base of the tile + int32 in-tile offsets
    o_base = i_t * BT * D + i_g * DG
    o_x = o_r[:, None] * D + o_d[None, :]  # [BT, BD]

    b_x = tl.load(x + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BT, BD]
    if HAS_RES:
        b_x += tl.load(res + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
    if STORE_H:
        # normalize the rounded residual stream, exactly what the backward will reload
        b_h = b_x.to(h.dtype.element_ty)
        tl.store(h + o_base + o_x, b_h, mask=m_x)
        b_x = b_h.to(tl.float32)
    if GATE_FIRST:  # normalize x * act(g) (no residual then)
        b_x = b_x * _act_fwd(tl.load(g + o_base + o_x, mask=m_x, other=0.0).to(tl.float32), ACT)

    if IS_RMS:
        b_xc = b_x
    else:
        b_mean = tl.sum(b_x, axis=1) / DG  # [BT]
        tl.store(mean + o_t * G + i_g, b_mean, mask=m_t)
        b_xc = tl.where(m_x, b_x - b_mean[:, None], 0.0)
    b_rstd = tl.rsqrt(tl.sum(b_xc * b_xc, axis=1) / DG + eps)  # [BT]
    tl.store(rstd + o_t * G + i_g, b_rstd, mask=m_t)

    b_y = b_xc * b_rstd[:, None]  # [BT, BD]
    if HAS_W:
        b_y = b_y * tl.load(w + i_g * DG + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        b_y = b_y + tl.load(b + i_g * DG + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if HAS_GATE:
        b_y = b_y * _act_fwd(tl.load(g + o_base + o_x, mask=m_x, other=0.0).to(tl.float32), ACT)
    tl.store(y + o_base + o_x, b_y.to(y.dtype.element_ty), mask=m_x)


@lean_launch
@triton.jit
def norm_bwd_kernel(
    x,  # [N, D] the normalized input (h when a residual was added)
    g,  # [N, D] or None
    w,  # [D] or None
    b,  # [D] or None
    mean,  # [N, G] fp32 (LayerNorm only)
    rstd,  # [N, G] fp32
    dy,  # [N, D]
    dh,  # [N, D] or None: gradient of the prenorm residual output
    dx,  # [N, D]
    dres,  # [N, D] or None: a second copy of dx in the residual's dtype
    dg,  # [N, D] or None
    dw,  # [NP, D] fp32 partial sums, or None
    db,  # [NP, D] fp32 partial sums, or None
    N,
    D,
    DG,
    G,
    BPP,  # row tiles per program
    IS_RMS: tl.constexpr,
    ACT: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
    HAS_GATE: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    HAS_DH: tl.constexpr,
    HAS_DRES: tl.constexpr,
    HAS_DG: tl.constexpr,
    HAS_DW: tl.constexpr,
    HAS_DB: tl.constexpr,
    GATE_FIRST: tl.constexpr = False,
):
    i_p, i_g = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_r = tl.arange(0, BT)  # [BT]
    o_d = tl.arange(0, BD)  # [BD]
    m_d = o_d < DG
    o_x = o_r[:, None] * D + o_d[None, :]  # [BT, BD] int32 in-tile offsets, the same for every tile
    if HAS_W:
        b_w = tl.load(w + i_g * DG + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    if HAS_B:
        b_b = tl.load(b + i_g * DG + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    # per-row partial sums, reduced over rows once at the end
    b_dw = tl.zeros([BT, BD], dtype=tl.float32)
    b_db = tl.zeros([BT, BD], dtype=tl.float32)

    for i_b in range(BPP):
        i_t = i_p * BPP + i_b
        o_t = i_t * BT + o_r  # [BT] rows
        m_t = o_t < N
        m_x = m_t[:, None] & m_d[None, :]  # [BT, BD]
        o_base = i_t * BT * D + i_g * DG  # int64 scalar

        b_x = tl.load(x + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
        if GATE_FIRST:  # the normalized input is x * act(g): form it again from the saved inputs
            b_gf = tl.load(g + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
            b_af = _act_fwd(b_gf, ACT)
            b_xin = b_x
            b_x = b_x * b_af
        b_dy = tl.load(dy + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_rstd = tl.load(rstd + o_t * G + i_g, mask=m_t, other=0.0)  # [BT]
        if IS_RMS:
            b_xhat = b_x * b_rstd[:, None]
        else:
            b_mean = tl.load(mean + o_t * G + i_g, mask=m_t, other=0.0)  # [BT]
            b_xhat = tl.where(m_x, (b_x - b_mean[:, None]) * b_rstd[:, None], 0.0)

        if HAS_GATE:
            # y = n * act(g) with n = xhat * w + b: split dy into dg and dn
            b_g = tl.load(g + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
            if HAS_DG:
                b_n = b_xhat
                if HAS_W:
                    b_n = b_n * b_w[None, :]
                if HAS_B:
                    b_n = b_n + b_b[None, :]
                tl.store(dg + o_base + o_x, (b_dy * b_n * _act_bwd(b_g, ACT)).to(dg.dtype.element_ty), mask=m_x)
            b_dy = b_dy * _act_fwd(b_g, ACT)

        if HAS_DW:
            b_dw += b_dy * b_xhat
        if HAS_DB:
            b_db += b_dy
        if HAS_W:
            b_wdy = b_dy * b_w[None, :]
        else:
            b_wdy = b_dy
        # dx = rstd * (wdy - xhat * mean(xhat * wdy) [- mean(wdy) for LayerNorm])
        b_c1 = tl.sum(b_xhat * b_wdy, axis=1) / DG  # [BT]
        b_dx = b_wdy - b_xhat * b_c1[:, None]
        if not IS_RMS:
            b_dx -= tl.sum(b_wdy, axis=1)[:, None] / DG
        b_dx = b_dx * b_rstd[:, None]
        if GATE_FIRST:  # b_dx is d(x * act(g)): split it into dg and dx
            if HAS_DG:
                tl.store(dg + o_base + o_x, (b_dx * b_xin * _act_bwd(b_gf, ACT)).to(dg.dtype.element_ty), mask=m_x)
            b_dx = b_dx * b_af
        if HAS_DH:
            b_dx += tl.load(dh + o_base + o_x, mask=m_x, other=0.0).to(tl.float32)
        tl.store(dx + o_base + o_x, b_dx.to(dx.dtype.element_ty), mask=m_x)
        if HAS_DRES:
            tl.store(dres + o_base + o_x, b_dx.to(dres.dtype.element_ty), mask=m_x)

    if HAS_DW:
        tl.store(dw + i_p * D + i_g * DG + o_d, tl.sum(b_dw, axis=0), mask=m_d)
    if HAS_DB:
        tl.store(db + i_p * D + i_g * DG + o_d, tl.sum(b_db, axis=0), mask=m_d)


@lean_launch
@triton.jit
def norm_bwd_reduce_kernel(
    pw,  # [NP, D] fp32 partial dw, or None
    pb,  # [NP, D] fp32 partial db, or None
    dw,  # [D] in the weight's dtype, or None
    db,  # [D] in the bias's dtype, or None
    NP,
    D,
    BP: tl.constexpr,
    BC: tl.constexpr,
    HAS_DW: tl.constexpr,
    HAS_DB: tl.constexpr,
):
    """``dw = pw.sum(0)``, ``db = pb.sum(0)`` in fp32, stored in the parameters' dtypes."""
    i_c = tl.program_id(0).to(tl.int64)
    o_c = i_c * BC + tl.arange(0, BC)  # [BC] columns
    m_c = o_c < D
    b_dw = tl.zeros([BP, BC], dtype=tl.float32)
    b_db = tl.zeros([BP, BC], dtype=tl.float32)
    for i_p in range(0, NP, BP):
        o_p = i_p + tl.arange(0, BP)  # [BP] partial rows
        m_x = (o_p < NP)[:, None] & m_c[None, :]  # [BP, BC]
        o_x = o_p[:, None] * D + o_c[None, :]  # [BP, BC]
        if HAS_DW:
            b_dw += tl.load(pw + o_x, mask=m_x, other=0.0)
        if HAS_DB:
            b_db += tl.load(pb + o_x, mask=m_x, other=0.0)
    if HAS_DW:
        tl.store(dw + o_c, tl.sum(b_dw, axis=0).to(dw.dtype.element_ty), mask=m_c)
    if HAS_DB:
        tl.store(db + o_c, tl.sum(b_db, axis=0).to(db.dtype.element_ty), mask=m_c)


def norm_fwd(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    g: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    num_groups: int,
    is_rms: bool,
    activation: str,
    h_dtype: torch.dtype | None,
    gate_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Launch :func:`norm_fwd_kernel` on contiguous ``[..., D]`` inputs (``N`` rows = all leading dims).

    Args:
        h_dtype: dtype of the stored residual stream ``h = x + residual``; ``None`` stores nothing.
        gate_first: normalize ``x * act(g)`` (no residual) instead of gating the normalized output.
    Returns:
        ``y [..., D]`` (x.dtype), ``h [..., D]`` or ``None``, ``mean [N, G]`` (fp32, ``None`` for RMS),
        ``rstd [N, G]`` (fp32).
    """
    D = x.shape[-1]
    N = x.numel() // D if D > 0 else 0
    group_width = D // num_groups
    y = empty_like(x)
    h = empty_like(x, dtype=h_dtype) if h_dtype is not None else None
    mean = None if is_rms else empty(N, num_groups, dtype=torch.float32, device=x.device)
    rstd = empty(N, num_groups, dtype=torch.float32, device=x.device)
    if N > 0:
        cfg = fwd_config(group_width)
        norm_fwd_kernel[(cdiv(N, cfg.BT), num_groups)](
            x, residual, g, weight, bias, y, h, mean, rstd, eps, N, D, group_width, num_groups,
            IS_RMS=is_rms, ACT=activation, BT=cfg.BT, BD=cfg.BD,
            HAS_RES=residual is not None, HAS_GATE=g is not None and not gate_first, HAS_W=weight is not None,
            HAS_B=bias is not None, STORE_H=h is not None, GATE_FIRST=g is not None and gate_first,
            num_warps=cfg.num_warps,
        )  # fmt: skip
    return y, h, mean, rstd


def norm_bwd(
    x: torch.Tensor,
    g: torch.Tensor | None,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor | None,
    rstd: torch.Tensor,
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    num_groups: int,
    is_rms: bool,
    activation: str,
    dx_dtype: torch.dtype,
    dres_dtype: torch.dtype | None,
    need_dg: bool,
    need_dw: bool,
    need_db: bool,
    gate_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launch :func:`norm_bwd_kernel` on contiguous ``[..., D]`` tensors saved by :func:`norm_fwd`.

    Args:
        x: the normalized input (``h`` when the forward added a residual; with ``gate_first``, the ``x``
            whose product with ``act(g)`` was normalized).
        dh: gradient of the prenorm output ``h`` (added to ``dx``), or ``None``.
        dres_dtype: dtype of the residual's gradient; ``None`` when it is not needed. When it equals
            ``dx_dtype`` the residual's gradient *is* ``dx`` (the same tensor, written once).
    Returns:
        ``dx [..., D]``, ``dresidual``, ``dg``, ``dweight [D]``, ``dbias [D]`` (``None`` where not asked).
    """
    D = x.shape[-1]
    N = x.numel() // D if D > 0 else 0
    group_width = D // num_groups
    dx = empty_like(x, dtype=dx_dtype)
    dres = empty_like(x, dtype=dres_dtype) if dres_dtype not in (None, dx_dtype) else None
    dg = empty_like(g) if need_dg else None
    dw = db = None
    if N == 0:
        dw = torch.zeros(D, dtype=weight.dtype, device=x.device) if need_dw else None
        db = torch.zeros(D, dtype=bias.dtype, device=x.device) if need_db else None
    else:
        cfg = bwd_config(group_width, g is not None)
        n_prog, bpp = _bwd_grid(N, group_width, num_groups, x.device)
        pw = empty(n_prog, D, dtype=torch.float32, device=x.device) if need_dw else None
        pb = empty(n_prog, D, dtype=torch.float32, device=x.device) if need_db else None
        norm_bwd_kernel[(n_prog, num_groups)](
            x, g, weight, bias, mean, rstd, dy, dh, dx, dres, dg, pw, pb,
            N, D, group_width, num_groups, bpp, IS_RMS=is_rms, ACT=activation, BT=cfg.BT, BD=cfg.BD,
            HAS_GATE=g is not None and not gate_first, HAS_W=weight is not None, HAS_B=bias is not None,
            HAS_DH=dh is not None, HAS_DRES=dres is not None, HAS_DG=need_dg, HAS_DW=need_dw, HAS_DB=need_db,
            GATE_FIRST=g is not None and gate_first, num_warps=cfg.num_warps,
        )  # fmt: skip
        if need_dw or need_db:
            dw = empty(D, dtype=weight.dtype, device=x.device) if need_dw else None
            db = empty(D, dtype=bias.dtype, device=x.device) if need_db else None
            norm_bwd_reduce_kernel[(cdiv(D, 32),)](
                pw, pb, dw, db, n_prog, D, BP=64, BC=32, HAS_DW=need_dw, HAS_DB=need_db, num_warps=4
            )
    if dres_dtype == dx_dtype:
        dres = dx
    return dx, dres, dg, dw, db
