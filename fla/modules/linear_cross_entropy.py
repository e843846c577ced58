"""Linear (LM head) + cross-entropy without materializing the ``[N, V]`` logits.

The tokens are processed in chunks of ``C`` rows. For each chunk: ``logits = x_c W^T + b``
(``[C, V]``, in the input dtype), the per-row loss and ``lse`` (cross-entropy forward
kernel), ``d logits`` written in place over the chunk's logits (cross-entropy backward
kernel), then at once ``dx_c = d logits @ W`` and ``dW += d logits^T x_c`` (float32
accumulator), ``db += sum_rows d logits``. Only ``dx``, ``dW``, ``db`` survive to the
backward, which scales them by the upstream gradient (and the ``1 / n_valid`` of ``mean``).

For ``reduction="none"`` the upstream gradient differs per row, so ``dW`` cannot be formed
in advance: the forward keeps only the losses, and the backward runs the chunk loop again.

Memory: besides the outputs, one chunk of logits (``C * V`` elements) plus one ``[V, H]``
float32 accumulator (and one ``[V, H]`` product in the input dtype for half inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fla.modules.cross_entropy import (
    CEOptions,
    CrossEntropyLossBase,
    check_ce_options,
    check_target,
    count_valid,
    cross_entropy_bwd,
    cross_entropy_fwd,
    reduce_loss,
    row_grad,
)
from fla.utils import (
    IGNORE_INDEX,
    Backend,
    check_dtype,
    check_same_device,
    check_shape,
    empty,
    empty_like,
    select_backend,
)
from fla.utils.autocast import autocast_state
from fla.utils.sizes import cdiv

# bounds (in elements) on one chunk of logits for the default chunk size
_MIN_CHUNK_ELEMS = 1 << 24
_MAX_CHUNK_ELEMS = 1 << 28


def default_chunk_size(N: int, H: int, V: int) -> int:
    """Rows per chunk: chunk logits of about ``2 * V * H`` elements (twice the weight).

    Tying the chunk to ``H`` keeps the ``dW`` accumulation (one ``[V, H]`` update per chunk)
    cheap next to the chunk's matmuls; the chunk is clamped to ``[2^24, 2^28]`` elements and
    the rows are split evenly over ``ceil(N * V / budget)`` chunks.
    """
    budget = min(max(2 * H * V, _MIN_CHUNK_ELEMS), _MAX_CHUNK_ELEMS)
    n_chunks = max(cdiv(N * V, budget), 1)
    return max(cdiv(N, n_chunks), 1)


def _accumulate_dw(dw: torch.Tensor, dlogits: torch.Tensor, x: torch.Tensor) -> None:
    """``dw += dlogits^T x`` with ``dw`` float32: half inputs round once per chunk, sums stay fp32."""
    if dlogits.dtype == dw.dtype:
        dw.addmm_(dlogits.t(), x)
    else:
        dw.add_(dlogits.t().mm(x))


def linear_cross_entropy_pass(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    opts: CEOptions,
    chunk_size: int,
    dloss: torch.Tensor | None = None,
    need: tuple[bool, bool, bool] = (True, True, True),
    backend: Backend | None = None,
    l2_coef: torch.Tensor | float = 0.0,
):
    """One loop over token chunks (no autograd).

    Args:
        x: ``[N, H]``; target: ``[N]``; weight: ``[V, H]``; bias: ``[V]`` or ``None``.
        dloss: ``[N]`` per-row upstream gradient, or ``None`` for the loss only.
        need: which of ``(dx, dW, db)`` to form when ``dloss`` is given.
        backend: of the cross-entropy kernels; default ``select_backend(x, weight)``.
        l2_coef: with ``dloss``, add ``l2_coef * max(logits)`` at each row's argmax of ``d logits``
            (L2Wrap, :mod:`fla.modules.l2warp`; 0: none).
    Returns:
        ``(loss [N], dx [N, H] | None, dW [V, H] float32 | None, db [V] float32 | None)``.
    """
    N, H = x.shape
    V = weight.shape[0]
    backend = backend or select_backend(x, weight)
    acc_dtype = torch.promote_types(weight.dtype, torch.float32)
    with_grad = dloss is not None
    loss = empty(N, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    dx = empty_like(x) if with_grad and need[0] else None
    dw = torch.zeros(V, H, dtype=acc_dtype, device=x.device) if with_grad and need[1] else None
    db = torch.zeros(V, dtype=acc_dtype, device=x.device) if with_grad and need[2] and bias is not None else None
    for start in range(0, N, chunk_size):
        end = min(start + chunk_size, N)
        x_c, t_c = x[start:end], target[start:end]
        logits = F.linear(x_c, weight, bias)  # [C, V]
        loss_c, lse_c = cross_entropy_fwd(logits, t_c, opts, backend)
        loss[start:end] = loss_c
        if not with_grad:
            continue
        top = logits.max(-1, keepdim=True) if isinstance(l2_coef, torch.Tensor) or l2_coef else None
        dlogits = cross_entropy_bwd(logits, t_c, lse_c, dloss[start:end], opts, True, backend)  # [C, V]
        if top is not None:  # logits are gone (dlogits overwrote them): the maxima were taken before
            dlogits.scatter_add_(-1, top.indices, (top.values.float() * l2_coef).to(dlogits.dtype))
        if dx is not None:
            torch.mm(dlogits, weight, out=dx[start:end])
        if dw is not None:
            _accumulate_dw(dw, dlogits, x_c)
        if db is not None:
            db.add_(dlogits.sum(0, dtype=acc_dtype))
    return loss, dx, dw, db


def _scaled(t: torch.Tensor | None, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``(t * scale).to(dtype)`` without a full-size temporary in ``t``'s dtype (no scale: cast only)."""
    if t is None:
        return None
    if scale is None:
        return t.to(dtype)
    out = torch.empty(t.shape, dtype=dtype, device=t.device)
    return torch.mul(t, scale, out=out)


class LinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x, target, weight, bias, opts: CEOptions, reduction: str, chunk_size: int, need_grad: bool, l2: float
    ):
        n_valid = count_valid(target, opts.ignore_index)
        need = tuple(need_grad and ctx.needs_input_grad[i] for i in (0, 2, 3))
        ctx.opts, ctx.reduction, ctx.chunk_size, ctx.need = opts, reduction, chunk_size, need
        ctx.backend = select_backend(x, weight)  # the backward runs where the forward ran
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.precomputed = reduction != "none" and any(need)
        if ctx.precomputed:
            # unit per-row gradient now; the backward multiplies by dout (and 1 / n_valid)
            unit = torch.ones((), dtype=torch.float32, device=x.device).expand(x.shape[0])
            # L2Wrap's term is l2 / N per row times dout; the backward's scale also divides by n_valid for "mean"
            l2_coef = l2 / max(x.shape[0], 1) * (n_valid.clamp(min=1).float() if reduction == "mean" else 1.0)
            loss, dx, dw, db = linear_cross_entropy_pass(
                x, target, weight, bias, opts, chunk_size, unit, need, ctx.backend, l2_coef if l2 else 0.0
            )
            ctx.save_for_backward(dx, dw, db, n_valid)
        else:
            loss = linear_cross_entropy_pass(x, target, weight, bias, opts, chunk_size, backend=ctx.backend)[0]
            ctx.save_for_backward(x, target, weight, bias, n_valid)
        return reduce_loss(loss, n_valid, reduction)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        if ctx.precomputed:
            dx, dw, db, n_valid = ctx.saved_tensors
            scale = row_grad(dout, n_valid, ctx.reduction, 1)[0]
        else:
            x, target, weight, bias, n_valid = ctx.saved_tensors
            dloss = row_grad(dout, n_valid, ctx.reduction, x.shape[0])
            _, dx, dw, db = linear_cross_entropy_pass(
                x, target, weight, bias, ctx.opts, ctx.chunk_size, dloss, ctx.need, ctx.backend
            )
            scale = None  # dout is already folded into the per-row gradient
        return (
            _scaled(dx, scale, x_dtype),
            None,
            _scaled(dw, scale, w_dtype),
            _scaled(db, scale, b_dtype) if b_dtype is not None else None,
            None,
            None,
            None,
            None,
            None,
        )


def _check_linear_ce_args(x, target, weight, bias, chunk_size) -> None:
    check_dtype("x", x)
    if x.dim() < 1:
        raise ValueError(f"x has shape {list(x.shape)}, expected [..., H]")
    H = x.shape[-1]
    check_shape("weight", weight, (None, H), f"[V, H] with H = x.shape[-1] = {H}")
    check_dtype("weight", weight, (x.dtype,))
    if bias is not None:
        check_shape("bias", bias, (weight.shape[0],), "[V] with V = weight.shape[0]")
        check_dtype("bias", bias, (x.dtype,))
    check_target(target, "x", x)
    check_same_device(x=x, target=target, weight=weight, bias=bias)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int or None")


def linear_cross_entropy(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    logit_scale: float = 1.0,
    lse_square_scale: float = 0.0,
    chunk_size: int | None = None,
    l2_penalty_factor: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of ``logit_scale * (x @ weight.T + bias)`` computed chunk by chunk.

    Same loss as ``cross_entropy_loss(F.linear(x, weight, bias), target, ...)`` (see
    :mod:`fla.modules.cross_entropy` for the options) without the ``[N, V]`` logits; under
    ``torch.autocast`` the inputs are cast to its dtype first, as ``F.linear``'s are.

    Args:
        x: ``[..., H]`` hidden states; target: ``[...]`` integer class ids.
        weight: ``[V, H]`` (dtype of ``x``); bias: ``[V]`` or ``None``.
        chunk_size: rows per chunk; default :func:`default_chunk_size`.
        l2_penalty_factor: > 0 adds L2Wrap's gradient (:func:`fla.modules.l2warp.l2_warp` on the logits, applied
            to the reduced loss; not with ``reduction="none"``).
    Returns:
        a float32 scalar, or ``[...]`` per-row losses for ``reduction="none"``.
    """
    amp = autocast_state(x.device)
    if amp is not None:  # as F.linear would: the matmuls in the autocast dtype (grads flow back through the casts)
        x, weight = x.to(amp), weight.to(amp)
        bias = None if bias is None else bias.to(amp)
    _check_linear_ce_args(x, target, weight, bias, chunk_size)
    check_ce_options(reduction, label_smoothing)
    if l2_penalty_factor and reduction == "none":
        raise ValueError("l2_penalty_factor (L2Wrap) needs a reduced loss, not reduction='none'")
    H, V = x.shape[-1], weight.shape[0]
    x2, t2 = x.reshape(-1, H), target.reshape(-1)
    chunk = chunk_size or default_chunk_size(x2.shape[0], H, V)
    opts = CEOptions(ignore_index, label_smoothing, logit_scale, lse_square_scale)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    loss = LinearCrossEntropyFunction.apply(
        x2, t2, weight, bias, opts, reduction, chunk, need_grad, float(l2_penalty_factor)
    )
    return loss.reshape(target.shape) if reduction == "none" else loss


class FusedLinearCrossEntropyLoss(CrossEntropyLossBase):
    """Module form of :func:`linear_cross_entropy`: ``forward(x [..., H], target [...], weight [V, H], bias)``."""

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        logit_scale: float = 1.0,
        lse_square_scale: float = 0.0,
        chunk_size: int | None = None,
        use_l2warp: bool = False,
        l2_penalty_factor: float = 1e-4,
        num_chunks: int | None = None,
        accumulate_grad_in_fp32: bool = True,
        logit_softcapping: float | None = None,
        process_group=None,
    ) -> None:
        """fla 0.6.0's other keywords: ``num_chunks`` sets the rows per chunk to ``ceil(N / num_chunks)`` at
        each call (unless ``chunk_size`` is given); ``accumulate_grad_in_fp32`` is accepted (the weight gradient
        always accumulates in float32 here); ``logit_softcapping`` and ``process_group`` raise unless ``None``."""
        super().__init__(
            ignore_index, reduction, label_smoothing, logit_scale, lse_square_scale,
            logit_softcapping=logit_softcapping, process_group=process_group,
        )  # fmt: skip
        if num_chunks is not None and (not isinstance(num_chunks, int) or num_chunks < 1):
            raise ValueError(f"FusedLinearCrossEntropyLoss: num_chunks={num_chunks!r} must be a positive int")
        self.chunk_size, self.num_chunks = chunk_size, num_chunks
        self.use_l2warp, self.l2_penalty_factor = use_l2warp, l2_penalty_factor

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        l2 = self.l2_penalty_factor if self.use_l2warp else 0.0
        chunk = self.chunk_size
        if chunk is None and self.num_chunks is not None:
            chunk = max(cdiv(x.numel() // max(x.shape[-1], 1), self.num_chunks), 1)
        return linear_cross_entropy(
            x, target, weight, bias, **self.loss_options(), chunk_size=chunk, l2_penalty_factor=l2
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", chunk_size={self.chunk_size}"


__all__ = ["FusedLinearCrossEntropyLoss", "default_chunk_size", "linear_cross_entropy", "linear_cross_entropy_pass"]
