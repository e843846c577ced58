"""Triton kernels shared by every fused norm of :mod:`fla.modules` (RMS / Layer / Group, gated or not).

One kernel pair serves all of them. A row ``x[n, :D]`` is split into ``G`` groups of ``DG = D / G``
features; each group is normalized on its own (``G = 1`` is LayerNorm / RMSNorm), while the affine
``weight`` / ``bias`` run over the full ``D``. Optional pieces are switched by ``@triton.heuristics``:

* residual: ``h = x + residual`` (fp32 add, then rounded to the residual-stream dtype) is normalized
  and stored when the caller needs it (prenorm output, or for the backward);
* gate: ``y = (xhat * w + b) * act(g)`` with ``act`` in {swish, sigmoid} (the gated norms).

Forward grid: ``(cdiv(N, BT), G)``, one ``[BT, BD]`` tile per program. Backward grid: ``(NP, G)``
with a few programs per SM; each walks ``BPP`` row tiles and writes its partial ``dw`` / ``db``
(fp32, ``[NP, D]``), which the host sums.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from fla.utils import IS_TRITON_INTERPRET, empty

# Largest group width one program keeps in registers (fp32 tiles of a full group).
MAX_GROUP_WIDTH = 32768
# Elements per [BT, BD] tile: small groups get several rows per program.
_TILE_ELEMENTS = 4096
_MAX_ROWS_PER_TILE = 16


def _configs() -> list[triton.Config]:
    if IS_TRITON_INTERPRET:  # num_warps means nothing to the interpreter: do not autotune
        return [triton.Config({}, num_warps=4)]
    return [triton.Config({}, num_warps=w) for w in (1, 2, 4, 8, 16)]


def block_sizes(group_width: int) -> tuple[int, int]:
    """``(BT, BD)``: rows per tile and the power-of-two tile width covering ``group_width`` features."""
    bd = triton.next_power_of_2(group_width)
    bt = max(1, min(_MAX_ROWS_PER_TILE, _TILE_ELEMENTS // bd))
    return bt, bd


@functools.cache
def _programs_per_device(device: torch.device) -> int:
    """How many backward programs to run: a few per SM on a GPU; 2 on CPU (the interpreter)."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 2


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


@triton.heuristics(
    {
        "HAS_RES": lambda a: a["res"] is not None,
        "HAS_GATE": lambda a: a["g"] is not None,
        "HAS_W": lambda a: a["w"] is not None,
        "HAS_B": lambda a: a["b"] is not None,
        "STORE_H": lambda a: a["h"] is not None,
    }
)
@triton.autotune(configs=_configs(), key=["BT", "BD", "IS_RMS", "HAS_RES", "HAS_GATE", "STORE_H"])
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
):
    i_t, i_g = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_t = i_t * BT + tl.arange(0, BT)  # [BT] rows
    o_d = tl.arange(0, BD)  # [BD] features within the group
    m_t, m_d = o_t < N, o_d < DG
    m_x = m_t[:, None] & m_d[None, :]  # [BT, BD]
    o_c = i_g * DG + o_d  # [BD] features within the row
    o_x = o_t[:, None] * D + o_c[None, :]  # [BT, BD]

    b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(tl.float32)  # [BT, BD]
    if HAS_RES:
        b_x += tl.load(res + o_x, mask=m_x, other=0.0).to(tl.float32)
    if STORE_H:
        # normalize the rounded residual stream, exactly what the backward will reload
        b_h = b_x.to(h.dtype.element_ty)
        tl.store(h + o_x, b_h, mask=m_x)
        b_x = b_h.to(tl.float32)

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
        b_y = b_y * tl.load(w + o_c, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        b_y = b_y + tl.load(b + o_c, mask=m_d, other=0.0).to(tl.float32)[None, :]
    if HAS_GATE:
        b_y = b_y * _act_fwd(tl.load(g + o_x, mask=m_x, other=0.0).to(tl.float32), ACT)
    tl.store(y + o_x, b_y.to(y.dtype.element_ty), mask=m_x)


@triton.heuristics(
    {
        "HAS_GATE": lambda a: a["g"] is not None,
        "HAS_W": lambda a: a["w"] is not None,
        "HAS_B": lambda a: a["b"] is not None,
        "HAS_DH": lambda a: a["dh"] is not None,
        "HAS_DRES": lambda a: a["dres"] is not None,
        "HAS_DG": lambda a: a["dg"] is not None,
        "HAS_DW": lambda a: a["dw"] is not None,
        "HAS_DB": lambda a: a["db"] is not None,
    }
)
@triton.autotune(configs=_configs(), key=["BT", "BD", "IS_RMS", "HAS_GATE", "HAS_DH", "HAS_DRES"])
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
    dres,  # [N, D] or None
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
):
    i_p, i_g = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_d = tl.arange(0, BD)  # [BD]
    m_d = o_d < DG
    o_c = i_g * DG + o_d  # [BD]
    if HAS_W:
        b_w = tl.load(w + o_c, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    if HAS_B:
        b_b = tl.load(b + o_c, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_dw = tl.zeros([BD], dtype=tl.float32)
    b_db = tl.zeros([BD], dtype=tl.float32)

    for i_b in range(BPP):
        o_t = (i_p * BPP + i_b) * BT + tl.arange(0, BT)  # [BT]
        m_t = o_t < N
        m_x = m_t[:, None] & m_d[None, :]  # [BT, BD]
        o_x = o_t[:, None] * D + o_c[None, :]  # [BT, BD]

        b_x = tl.load(x + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_dy = tl.load(dy + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_rstd = tl.load(rstd + o_t * G + i_g, mask=m_t, other=0.0)  # [BT]
        if IS_RMS:
            b_xhat = b_x * b_rstd[:, None]
        else:
            b_mean = tl.load(mean + o_t * G + i_g, mask=m_t, other=0.0)  # [BT]
            b_xhat = tl.where(m_x, (b_x - b_mean[:, None]) * b_rstd[:, None], 0.0)

        if HAS_GATE:
            # y = n * act(g) with n = xhat * w + b: split dy into dg and dn
            b_g = tl.load(g + o_x, mask=m_x, other=0.0).to(tl.float32)
            if HAS_DG:
                b_n = b_xhat
                if HAS_W:
                    b_n = b_n * b_w[None, :]
                if HAS_B:
                    b_n = b_n + b_b[None, :]
                tl.store(dg + o_x, (b_dy * b_n * _act_bwd(b_g, ACT)).to(dg.dtype.element_ty), mask=m_x)
            b_dy = b_dy * _act_fwd(b_g, ACT)

        if HAS_DW:
            b_dw += tl.sum(b_dy * b_xhat, axis=0)
        if HAS_DB:
            b_db += tl.sum(b_dy, axis=0)
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
        if HAS_DH:
            b_dx += tl.load(dh + o_x, mask=m_x, other=0.0).to(tl.float32)
        tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_x)
        if HAS_DRES:
            tl.store(dres + o_x, b_dx.to(dres.dtype.element_ty), mask=m_x)

    if HAS_DW:
        tl.store(dw + i_p * D + o_c, b_dw, mask=m_d)
    if HAS_DB:
        tl.store(db + i_p * D + o_c, b_db, mask=m_d)


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
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Launch :func:`norm_fwd_kernel` on contiguous ``[N, D]`` inputs.

    Args:
        h_dtype: dtype of the stored residual stream ``h = x + residual``; ``None`` stores nothing.
    Returns:
        ``y [N, D]`` (x.dtype), ``h [N, D]`` or ``None``, ``mean [N, G]`` (fp32, ``None`` for RMS),
        ``rstd [N, G]`` (fp32).
    """
    N, D = x.shape
    dg = D // num_groups
    bt, bd = block_sizes(dg)
    y = empty(N, D, dtype=x.dtype, device=x.device)
    h = empty(N, D, dtype=h_dtype, device=x.device) if h_dtype is not None else None
    mean = None if is_rms else empty(N, num_groups, dtype=torch.float32, device=x.device)
    rstd = empty(N, num_groups, dtype=torch.float32, device=x.device)
    if N > 0:
        grid = (triton.cdiv(N, bt), num_groups)
        norm_fwd_kernel[grid](
            x, residual, g, weight, bias, y, h, mean, rstd, eps, N, D, dg, num_groups,
            IS_RMS=is_rms, ACT=activation, BT=bt, BD=bd,
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
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launch :func:`norm_bwd_kernel` on contiguous ``[N, D]`` tensors saved by :func:`norm_fwd`.

    Args:
        x: the normalized input (``h`` when the forward added a residual).
        dh: gradient of the prenorm output ``h`` (added to ``dx``), or ``None``.
        dres_dtype: dtype of the residual's gradient; ``None`` when it is not needed.
    Returns:
        ``dx [N, D]``, ``dresidual``, ``dg``, ``dweight [D]``, ``dbias [D]`` (``None`` where not asked).
    """
    N, D = x.shape
    dg_width = D // num_groups
    bt, bd = block_sizes(dg_width)
    n_tiles = triton.cdiv(N, bt)
    n_prog = max(1, min(n_tiles, _programs_per_device(x.device)))
    bpp = max(1, triton.cdiv(n_tiles, n_prog))
    n_prog = max(1, triton.cdiv(n_tiles, bpp))

    dx = empty(N, D, dtype=dx_dtype, device=x.device)
    dres = empty(N, D, dtype=dres_dtype, device=x.device) if dres_dtype is not None else None
    dg = empty(N, D, dtype=g.dtype, device=x.device) if need_dg else None
    dw = empty(n_prog, D, dtype=torch.float32, device=x.device) if need_dw else None
    db = empty(n_prog, D, dtype=torch.float32, device=x.device) if need_db else None
    if N > 0:
        norm_bwd_kernel[(n_prog, num_groups)](
            x, g, weight, bias, mean, rstd, dy, dh, dx, dres, dg, dw, db, N, D, dg_width, num_groups, bpp,
            IS_RMS=is_rms, ACT=activation, BT=bt, BD=bd,
        )  # fmt: skip
    else:
        dw = dw.zero_() if dw is not None else None
        db = db.zero_() if db is not None else None
    dweight = dw.sum(0).to(weight.dtype) if need_dw else None
    dbias = db.sum(0).to(bias.dtype) if need_db else None
    return dx, dres, dg, dweight, dbias
