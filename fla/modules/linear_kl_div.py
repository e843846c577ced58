"""Distillation loss: KL(teacher || student) of two LM heads, without materializing the ``[N, V]`` logits.

fla 0.6.0's ``FusedKLDivLoss`` / ``fused_kl_div_loss``, same names and arguments. With student logits
``s = x W^T`` and frozen teacher logits ``t = x_T W_T^T`` (``[N, V]``), per row::

    loss_n = sum_v p_v (log p_v - log q_v),     p = softmax(t_n), q = softmax(s_n)
    loss   = sum_n loss_n / N                    ("batchmean")
    d s_n  = (q - p) / N

The rows are processed in chunks (:func:`fla.modules.linear_cross_entropy.default_chunk_size`), as the linear
cross-entropy does: per chunk the two logit blocks, the row losses and ``d s`` (float32), then at once
``dx_c = d s W`` and ``dW += d s^T x_c`` (float32 accumulator with ``accumulate_grad_in_fp32``). Under
``torch.autocast`` the four tensors are cast to its dtype first, as ``F.linear``'s are. Only ``dx``
and ``dW`` survive to the backward, which scales them by the upstream gradient. The teacher gets no gradient:
``target_x`` and ``target_weight`` must not require one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fla.modules.linear_cross_entropy import _accumulate_dw, default_chunk_size
from fla.utils import check_dtype, check_same_device, check_shape
from fla.utils.autocast import autocast_state

REDUCTIONS = ("batchmean",)


def linear_kl_div_pass(
    x: torch.Tensor,
    target_x: torch.Tensor,
    weight: torch.Tensor,
    target_weight: torch.Tensor,
    need: tuple[bool, bool],
    accumulate_grad_in_fp32: bool = True,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One loop over row chunks (no autograd).

    Args:
        x, target_x: ``[N, H]`` and ``[N, H_T]``; weight, target_weight: ``[V, H]`` and ``[V, H_T]``.
        need: which of ``(dx, dW)`` to form.
        accumulate_grad_in_fp32: sum ``dW`` in float32 (else in ``weight.dtype``).
        chunk_size: rows per chunk (default :func:`default_chunk_size` of the student head).
    Returns:
        ``(loss, dx [N, H] | None, dW [V, H] | None)``: the scalar ``batchmean`` loss (float32) and the gradients
        of that loss (``x.dtype``; ``dW`` float32 or ``weight.dtype``).
    """
    N, H = x.shape
    V = weight.shape[0]
    chunk_size = chunk_size or default_chunk_size(N, H, V)
    acc_dtype = torch.float32 if accumulate_grad_in_fp32 else weight.dtype
    loss = torch.zeros((), dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x) if need[0] else None
    dw = torch.zeros(V, H, dtype=acc_dtype, device=x.device) if need[1] else None
    for start in range(0, N, chunk_size):
        end = min(start + chunk_size, N)
        x_c = x[start:end]
        log_q = F.log_softmax(F.linear(x_c, weight).float(), -1)  # [C, V] student
        log_p = F.log_softmax(F.linear(target_x[start:end], target_weight).float(), -1)  # [C, V] teacher
        p = log_p.exp()
        loss += (p * (log_p - log_q)).sum()
        if dx is None and dw is None:
            continue
        ds = log_q.exp_().sub_(p).div_(N).to(x.dtype)  # [C, V] (q - p) / N, over log_q's storage
        if dx is not None:
            torch.mm(ds, weight, out=dx[start:end])
        if dw is not None:
            _accumulate_dw(dw, ds, x_c)
    return loss / N, dx, dw


class LinearKLDivFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target_x, weight, target_weight, accumulate_grad_in_fp32, chunk_size):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[2])
        loss, dx, dw = linear_kl_div_pass(x, target_x, weight, target_weight, need, accumulate_grad_in_fp32, chunk_size)
        ctx.save_for_backward(dx, dw)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        dx, dw = ctx.saved_tensors
        dx = None if dx is None else dx * dout.to(dx.dtype)
        dw = None if dw is None else (dw * dout.to(dw.dtype)).to(ctx.weight_dtype)
        return dx, None, dw, None, None, None


def _check_kl_args(x, target_x, weight, target_weight, reduction, chunk_size) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not supported; fla's FusedKLDivLoss takes {REDUCTIONS}")
    for name, t in (("x", x), ("target_x", target_x), ("weight", weight), ("target_weight", target_weight)):
        check_dtype(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name} has shape {list(t.shape)}, expected 2 dims")
    check_shape("target_x", target_x, (x.shape[0], None), "[N, H_teacher] (N rows as x)")
    check_shape("weight", weight, (None, x.shape[1]), "[V, H] (H as x)")
    check_shape("target_weight", target_weight, (weight.shape[0], target_x.shape[1]), "[V, H_teacher]")
    check_dtype("weight", weight, (x.dtype,))
    check_dtype("target_weight", target_weight, (target_x.dtype,))
    check_same_device(x=x, target_x=target_x, weight=weight, target_weight=target_weight)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int or None")
    if x.shape[0] == 0:
        raise ValueError("x has 0 rows: batchmean over no rows is undefined")
    if target_x.requires_grad or target_weight.requires_grad:
        raise ValueError(
            "target_x / target_weight require grad: the teacher gets no gradient here; detach them "
            "(or use torch.nn.functional.kl_div for a trainable teacher)"
        )


def fused_kl_div_loss(
    x: torch.Tensor,
    target_x: torch.Tensor,
    weight: torch.Tensor,
    target_weight: torch.Tensor,
    reduction: str = "batchmean",
    accumulate_grad_in_fp32: bool = True,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """KL(softmax(target_x W_T^T) || softmax(x W^T)) summed over the vocabulary, averaged over rows.

    Args:
        x: ``[N, H]`` student hidden states; target_x: ``[N, H_T]`` teacher hidden states (no grad).
        weight: ``[V, H]`` student LM head; target_weight: ``[V, H_T]`` teacher LM head (no grad).
        reduction: ``"batchmean"`` (the only one, as in fla 0.6.0).
        accumulate_grad_in_fp32: sum the weight gradient over chunks in float32.
        chunk_size: rows per chunk (default: about twice the weight's size in logits).
    Returns:
        the scalar loss (float32); gradients reach ``x`` and ``weight``.
    """
    amp = autocast_state(x.device)
    if amp is not None:  # as F.linear would, and as the linear cross-entropy does: both heads in the autocast dtype
        x, target_x, weight, target_weight = (t.to(amp) for t in (x, target_x, weight, target_weight))
    _check_kl_args(x, target_x, weight, target_weight, reduction, chunk_size)
    return LinearKLDivFunction.apply(x, target_x, weight, target_weight, accumulate_grad_in_fp32, chunk_size)


class FusedKLDivLoss(nn.Module):
    """:func:`fused_kl_div_loss` as a module (fla 0.6.0's ``FusedKLDivLoss``):
    ``forward(x [N, H], target_x [N, H_T], weight [V, H], target_weight [V, H_T]) -> loss``."""

    def __init__(self, reduction: str = "batchmean", accumulate_grad_in_fp32: bool = True):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not supported; fla's FusedKLDivLoss takes {REDUCTIONS}")
        self.reduction = reduction
        self.accumulate_grad_in_fp32 = accumulate_grad_in_fp32

    def forward(
        self, x: torch.Tensor, target_x: torch.Tensor, weight: torch.Tensor, target_weight: torch.Tensor
    ) -> torch.Tensor:
        return fused_kl_div_loss(x, target_x, weight, target_weight, self.reduction, self.accumulate_grad_in_fp32)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, accumulate_grad_in_fp32={self.accumulate_grad_in_fp32}"


__all__ = ["FusedKLDivLoss", "fused_kl_div_loss"]
