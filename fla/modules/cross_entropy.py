"""Cross-entropy over a vocabulary with label smoothing, logit scaling and z-loss.

Per row ``i`` with target ``t``, scaled logits ``z = logit_scale * logits`` over ``V``
classes, ``eps = label_smoothing`` and ``lam = lse_square_scale``::

    lse    = log sum_j exp(z_j)
    loss_i = lse - (1 - eps) z_t - eps / V * sum_j z_j + lam * lse^2      (0 if t == ignore_index)
    d loss_i / d logits_j = logit_scale * ((1 + 2 lam lse) softmax(z)_j - (1 - eps) [j == t] - eps / V)

which is ``F.cross_entropy(z, t, label_smoothing=eps)`` plus the z-loss term. Reductions:
``mean`` divides the summed loss by the number of non-ignored rows (0 when every row is
ignored: the loss is then 0, never NaN), ``sum`` sums, ``none`` returns the per-row losses.
The loss is returned in float32 (float64 for float64 logits); the gradient in the logits' dtype.

The Triton forward kernel runs one program per row and an online logsumexp over blocks of
``V`` in float32; the backward kernel recomputes the softmax from the saved ``lse`` (a
``[N]`` vector), so nothing of size ``[N, V]`` is stored besides the logits themselves.
Targets outside ``[0, V)`` other than ``ignore_index`` are not checked on the Triton path
(they read as a zero logit); the PyTorch path raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import triton
import triton.language as tl

from fla.utils import IGNORE_INDEX, Backend, check_dtype, check_same_device, empty, select_backend
from fla.utils.launch import lean_launch
from fla.utils.sizes import cdiv, next_power_of_2

REDUCTIONS = ("mean", "sum", "none")
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_MAX_BLOCK_V = 4096


@dataclass(frozen=True)
class CEOptions:
    """Per-row loss options shared by the forward and backward of both backends."""

    ignore_index: int = IGNORE_INDEX
    label_smoothing: float = 0.0
    logit_scale: float = 1.0
    lse_square_scale: float = 0.0


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

_ce_heuristics = triton.heuristics(
    {
        "HAS_SMOOTHING": lambda args: args["label_smoothing"] > 0,
        "HAS_ZLOSS": lambda args: args["lse_square_scale"] != 0,
    }
)


@lean_launch
@_ce_heuristics
@triton.jit
def cross_entropy_fwd_kernel(
    logits,
    target,
    loss,
    lse,
    V,
    ignore_index,
    logit_scale,
    label_smoothing,
    lse_square_scale,
    BV: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    HAS_ZLOSS: tl.constexpr,
):
    # fp32 scalars: torch.compile passes Python floats as fp64
    label_smoothing = tl.cast(label_smoothing, tl.float32)
    logit_scale = tl.cast(logit_scale, tl.float32)
    lse_square_scale = tl.cast(lse_square_scale, tl.float32)
    i_n = tl.program_id(0).to(tl.int64)
    p_row = logits + i_n * V
    b_t = tl.load(target + i_n).to(tl.int64)
    # online logsumexp: running max b_m and running sum b_s of exp(z - b_m)
    b_m = float("-inf")
    b_s = 0.0
    b_zsum = 0.0
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)  # [BV]
        m_v = o_v < V  # [BV]
        b_z = tl.load(p_row + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * logit_scale  # [BV]
        b_m_new = tl.maximum(b_m, tl.max(b_z, 0))
        b_s = b_s * tl.exp(b_m - b_m_new) + tl.sum(tl.exp(b_z - b_m_new), 0)
        b_m = b_m_new
        if HAS_SMOOTHING:
            b_zsum += tl.sum(tl.where(m_v, b_z, 0.0), 0)
    b_lse = b_m + tl.log(b_s)
    m_t = (b_t >= 0) & (b_t < V)
    b_zt = tl.load(p_row + b_t, mask=m_t, other=0.0).to(tl.float32) * logit_scale
    b_loss = b_lse - (1.0 - label_smoothing) * b_zt
    if HAS_SMOOTHING:
        b_loss -= label_smoothing * b_zsum / V
    if HAS_ZLOSS:
        b_loss += lse_square_scale * b_lse * b_lse
    b_loss = tl.where(b_t != ignore_index, b_loss, 0.0)
    tl.store(loss + i_n, b_loss.to(loss.dtype.element_ty))
    tl.store(lse + i_n, b_lse)


@lean_launch
@_ce_heuristics
@triton.jit
def cross_entropy_bwd_kernel(
    logits,
    target,
    lse,
    dloss,
    dlogits,
    stride_dloss,
    V,
    ignore_index,
    logit_scale,
    label_smoothing,
    lse_square_scale,
    BV: tl.constexpr,
    HAS_SMOOTHING: tl.constexpr,
    HAS_ZLOSS: tl.constexpr,
):
    # dlogits may alias logits: every element is read before this program writes it
    # fp32 scalars: torch.compile passes Python floats as fp64
    label_smoothing = tl.cast(label_smoothing, tl.float32)
    logit_scale = tl.cast(logit_scale, tl.float32)
    lse_square_scale = tl.cast(lse_square_scale, tl.float32)
    i_n, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    b_t = tl.load(target + i_n).to(tl.int64)
    b_lse = tl.load(lse + i_n).to(tl.float32)
    b_dl = tl.load(dloss + i_n * stride_dloss).to(tl.float32) * logit_scale
    o_v = i_v * BV + tl.arange(0, BV)  # [BV]
    m_v = o_v < V  # [BV]
    b_z = tl.load(logits + i_n * V + o_v, mask=m_v, other=0.0).to(tl.float32) * logit_scale  # [BV]
    b_p = tl.exp(b_z - b_lse)  # [BV] softmax
    if HAS_ZLOSS:
        b_p = b_p * (1.0 + 2.0 * lse_square_scale * b_lse)
    b_d = b_p - tl.where(o_v == b_t, 1.0 - label_smoothing, 0.0)  # [BV]
    if HAS_SMOOTHING:
        b_d -= label_smoothing / V
    b_d = tl.where(b_t != ignore_index, b_d * b_dl, 0.0)
    tl.store(dlogits + i_n * V + o_v, b_d.to(dlogits.dtype.element_ty), mask=m_v)


def _block_v(V: int) -> tuple[int, int]:
    """(BV, num_warps) for a vocabulary of ``V``."""
    bv = min(next_power_of_2(V), _MAX_BLOCK_V)
    return bv, 8 if bv >= 2048 else 4


def _loss_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)


def _kernel_opts(opts: CEOptions) -> dict:
    return {
        "ignore_index": opts.ignore_index,
        "logit_scale": float(opts.logit_scale),
        "label_smoothing": float(opts.label_smoothing),
        "lse_square_scale": float(opts.lse_square_scale),
    }


def _fwd_triton(logits: torch.Tensor, target: torch.Tensor, opts: CEOptions):
    N, V = logits.shape
    logits, target = logits.contiguous(), target.contiguous()
    loss = empty(N, dtype=_loss_dtype(logits), device=logits.device)
    lse = empty(N, dtype=torch.float32, device=logits.device)
    if N > 0:
        bv, warps = _block_v(V)
        cross_entropy_fwd_kernel[(N,)](logits, target, loss, lse, V, **_kernel_opts(opts), BV=bv, num_warps=warps)
    return loss, lse


def _bwd_triton(logits, target, lse, dloss, opts: CEOptions, inplace: bool):
    N, V = logits.shape
    if inplace and not logits.is_contiguous():
        raise ValueError("cross_entropy_bwd: inplace=True needs contiguous logits")
    logits, target, lse = logits.contiguous(), target.contiguous(), lse.contiguous()
    dlogits = logits if inplace else empty(N, V, dtype=logits.dtype, device=logits.device)
    if N > 0:
        bv, warps = _block_v(V)
        grid = (N, cdiv(V, bv))
        cross_entropy_bwd_kernel[grid](
            logits, target, lse, dloss, dlogits, dloss.stride(0), V, **_kernel_opts(opts), BV=bv, num_warps=warps
        )
    return dlogits


# ----------------------------------------------------------------------------------------------
# PyTorch path
# ----------------------------------------------------------------------------------------------


def _scaled(logits: torch.Tensor, opts: CEOptions) -> torch.Tensor:
    return logits.to(_loss_dtype(logits)) * opts.logit_scale


def _fwd_torch(logits: torch.Tensor, target: torch.Tensor, opts: CEOptions):
    z = _scaled(logits, opts)  # [N, V]
    lse = torch.logsumexp(z, dim=-1)  # [N]
    valid = target != opts.ignore_index
    safe_t = torch.where(valid, target, torch.zeros_like(target)).long()
    loss = lse - (1 - opts.label_smoothing) * z.gather(1, safe_t[:, None]).squeeze(1)
    if opts.label_smoothing > 0:
        loss = loss - opts.label_smoothing * z.mean(dim=-1)
    if opts.lse_square_scale != 0:
        loss = loss + opts.lse_square_scale * lse.square()
    return torch.where(valid, loss, torch.zeros_like(loss)), lse.float()


def _bwd_torch(logits, target, lse, dloss, opts: CEOptions, inplace: bool):
    V = logits.shape[1]
    z = _scaled(logits, opts)
    lse = lse.to(z.dtype)[:, None]
    d = torch.exp(z - lse)  # [N, V] softmax
    if opts.lse_square_scale != 0:
        d = d * (1 + 2 * opts.lse_square_scale * lse)
    valid = target != opts.ignore_index
    safe_t = torch.where(valid, target, torch.zeros_like(target)).long()
    d.scatter_add_(1, safe_t[:, None], torch.full_like(lse, opts.label_smoothing - 1))
    if opts.label_smoothing > 0:
        d = d - opts.label_smoothing / V
    d = torch.where(valid[:, None], d * (dloss.to(d.dtype) * opts.logit_scale)[:, None], torch.zeros_like(d))
    return logits.copy_(d) if inplace else d.to(logits.dtype)


# ----------------------------------------------------------------------------------------------
# Dispatching primitives (no autograd) and reductions, shared with linear_cross_entropy
# ----------------------------------------------------------------------------------------------


def cross_entropy_fwd(
    logits: torch.Tensor, target: torch.Tensor, opts: CEOptions, backend: Backend | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and logsumexp.

    Args:
        logits: ``[N, V]`` float; target: ``[N]`` integer.
        backend: ``"triton"`` / ``"torch"``; default ``select_backend(logits, target)``.
    Returns:
        ``(loss [N], lse [N])``: loss in float32 (float64 for float64 logits), 0 on ignored rows;
        lse in float32 (of the scaled logits).
    """
    if (backend or select_backend(logits, target)) == "torch":
        return _fwd_torch(logits, target, opts)
    return _fwd_triton(logits, target, opts)


def cross_entropy_bwd(
    logits: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    dloss: torch.Tensor,
    opts: CEOptions,
    inplace: bool = False,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Gradient of ``sum_i dloss_i * loss_i`` with respect to the logits.

    Args:
        logits: ``[N, V]``; target: ``[N]``; lse: ``[N]`` from :func:`cross_entropy_fwd`.
        dloss: ``[N]`` per-row upstream gradient (a stride-0 expanded scalar is fine).
        inplace: write the gradient into ``logits`` (which must be contiguous) and return it.
        backend: default ``select_backend(logits, target, lse)``.
    Returns:
        ``[N, V]`` gradient in ``logits.dtype`` (zero rows where ``target == ignore_index``).
    """
    if (backend or select_backend(logits, target, lse)) == "torch":
        return _bwd_torch(logits, target, lse, dloss, opts, inplace)
    return _bwd_triton(logits, target, lse, dloss, opts, inplace)


def count_valid(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Number of non-ignored targets as a 0-d tensor (no host sync)."""
    return (target != ignore_index).sum()


def reduce_loss(loss: torch.Tensor, n_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-row losses ``[N]``: mean over ``n_valid`` rows (0 if none), sum, or none."""
    if reduction == "mean":
        return loss.sum() / n_valid.clamp(min=1).to(loss.dtype)
    if reduction == "sum":
        return loss.sum()
    return loss


def row_grad(dout: torch.Tensor, n_valid: torch.Tensor, reduction: str, n: int) -> torch.Tensor:
    """The per-row upstream gradient ``[N]`` (float32) for the reduced loss's gradient ``dout``."""
    if reduction == "mean":
        return (dout.float() / n_valid.clamp(min=1).float()).expand(n)
    if reduction == "sum":
        return dout.float().expand(n)
    return dout.reshape(n).float().contiguous()


def check_ce_options(reduction: str, label_smoothing: float) -> None:
    """Raise ``ValueError`` on an unknown reduction or a smoothing outside ``[0, 1]``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1]")


def check_target(target: torch.Tensor, rows_name: str, rows: torch.Tensor) -> None:
    """``target`` must be integer with shape ``rows.shape[:-1]`` (``rows`` is logits or x)."""
    if target.dtype not in INT_DTYPES:
        raise TypeError(f"target has dtype {target.dtype}, expected an integer dtype (torch.int64 or torch.int32)")
    if tuple(target.shape) != tuple(rows.shape[:-1]):
        raise ValueError(
            f"target has shape {list(target.shape)} but {rows_name} has shape {list(rows.shape)}: "
            f"expected target shape {list(rows.shape[:-1])} ({rows_name}.shape[:-1])"
        )


# ----------------------------------------------------------------------------------------------
# Autograd and public API
# ----------------------------------------------------------------------------------------------


class CrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, opts: CEOptions, reduction: str):
        # the backward runs where the forward ran (the backend may be forced only around the forward)
        ctx.backend = select_backend(logits, target)
        loss, lse = cross_entropy_fwd(logits, target, opts, ctx.backend)
        n_valid = count_valid(target, opts.ignore_index)
        ctx.save_for_backward(logits, target, lse, n_valid)
        ctx.opts, ctx.reduction = opts, reduction
        return reduce_loss(loss, n_valid, reduction)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        logits, target, lse, n_valid = ctx.saved_tensors
        dloss = row_grad(dout, n_valid, ctx.reduction, logits.shape[0])
        return cross_entropy_bwd(logits, target, lse, dloss, ctx.opts, backend=ctx.backend), None, None, None


def cross_entropy_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    logit_scale: float = 1.0,
    lse_square_scale: float = 0.0,
) -> torch.Tensor:
    """Fused cross-entropy (+ z-loss ``lse_square_scale * lse^2``) of ``logit_scale * logits``.

    Args:
        logits: ``[..., V]`` float16/bfloat16/float32/float64.
        target: ``[...]`` integer class ids; rows equal to ``ignore_index`` give 0 loss and 0 grad.
        reduction: ``"mean"`` (over non-ignored rows; 0 if all are ignored), ``"sum"`` or ``"none"``.
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.
    Returns:
        a float32 scalar, or ``[...]`` per-row losses for ``reduction="none"``.
    """
    check_dtype("logits", logits)
    if logits.dim() < 1:
        raise ValueError(f"logits has shape {list(logits.shape)}, expected [..., V]")
    check_target(target, "logits", logits)
    check_same_device(logits=logits, target=target)
    check_ce_options(reduction, label_smoothing)
    opts = CEOptions(ignore_index, label_smoothing, logit_scale, lse_square_scale)
    V = logits.shape[-1]
    loss = CrossEntropyFunction.apply(logits.reshape(-1, V), target.reshape(-1), opts, reduction)
    return loss.reshape(target.shape) if reduction == "none" else loss


class CrossEntropyLossBase(nn.Module):
    """Holds (and checks) the loss options shared by the cross-entropy loss modules."""

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        logit_scale: float = 1.0,
        lse_square_scale: float = 0.0,
        inplace_backward: bool = False,
        logit_softcapping: float | None = None,
        process_group=None,
        return_z_loss: bool = False,
    ) -> None:
        """fla 0.6.0's other keywords: ``inplace_backward`` is accepted (our backward always writes the gradient
        over the logits it recomputes); ``logit_softcapping``, ``process_group`` (vocab-parallel loss) and
        ``return_z_loss`` are not provided here and raise unless left at their defaults."""
        super().__init__()
        check_ce_options(reduction, label_smoothing)
        unsupported = {"logit_softcapping": logit_softcapping, "process_group": process_group}
        unsupported["return_z_loss"] = return_z_loss or None
        for name, value in unsupported.items():
            if value is not None:
                raise ValueError(f"{type(self).__name__}: {name}={value!r} is not supported here")
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.logit_scale = logit_scale
        self.lse_square_scale = lse_square_scale

    def loss_options(self) -> dict:
        """The options as keyword arguments of :func:`cross_entropy_loss` (and the linear variant)."""
        return {
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
            "logit_scale": self.logit_scale,
            "lse_square_scale": self.lse_square_scale,
        }

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, label_smoothing={self.label_smoothing}, "
            f"logit_scale={self.logit_scale}, lse_square_scale={self.lse_square_scale}"
        )


class FusedCrossEntropyLoss(CrossEntropyLossBase):
    """Module form of :func:`cross_entropy_loss`: ``forward(logits [..., V], target [...])`` (options: see the base)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(logits, target, **self.loss_options())


__all__ = [
    "CEOptions",
    "FusedCrossEntropyLoss",
    "cross_entropy_bwd",
    "cross_entropy_fwd",
    "cross_entropy_loss",
]
