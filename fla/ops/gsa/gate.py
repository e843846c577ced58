"""The additive slot gate of ABC (GSA without a forget gate): slot logits -> normalized slots and log decays.

Per slot ``m`` the running log normalizer ``z_t = logaddexp(z_{t-1}, s_t)`` (a log-cumsum-exp over the
sequence, continuing from ``z0`` when given) turns the logits into::

    s'_t = exp(s_t - z_t),        g_t = z_{t-1} - z_t   (<= 0)

so ``sum_{j <= t} exp(s_j) x_j / sum_{j <= t} exp(s_j)`` (ABC's slot memory, a running softmax-weighted
average) is the gated recurrence ``S_t = exp(g_t) S_{t-1} + s'_t x_t``. Without ``z0`` the first decay is
``g_0 = 0`` (fla 0.6.0's convention: an initial state is kept as is); with ``z0`` (the ``z`` a previous call
returned) a sequence split in two gives exactly the outputs of one call: the decode path.
"""

from __future__ import annotations

import torch

from fla.ops.gsa.gate_scan import additive_gate_triton
from fla.ops.utils.index import prepare_lens
from fla.ops.utils.varlen import pad_sequences, unpad_sequences
from fla.utils.backend import dispatch


def _dense_gate(s: torch.Tensor, z0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = s.float() if s.dtype != torch.float64 else s
    if z0 is None:
        z = x.logcumsumexp(1)
        z_prev = torch.cat((z[:, :1], z[:, :-1]), 1)
    else:
        z0 = z0.to(x.dtype)[:, None]
        z = torch.cat((z0, x), 1).logcumsumexp(1)[:, 1:]
        z_prev = torch.cat((z0, z[:, :-1]), 1)
    return (x - z).exp(), z_prev - z, z


def additive_gate(
    s: torch.Tensor, cu_seqlens: torch.Tensor | None = None, z0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ABC's slot gate: the Triton scan of :mod:`fla.ops.gsa.gate_scan` on the GPU path, else (CPU, float64)
    :func:`additive_gate_torch`; same arguments and results."""
    if s.dtype == torch.float64:
        return additive_gate_torch(s, cu_seqlens, z0)
    return dispatch((s, z0), additive_gate_torch, additive_gate_triton, s, cu_seqlens, z0)


def additive_gate_torch(
    s: torch.Tensor, cu_seqlens: torch.Tensor | None = None, z0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ABC's slot gate in differentiable PyTorch (``logcumsumexp``; varlen through padding).

    Args:
        s: ``[B, T, H, M]`` slot logits; cu_seqlens: ``[N+1]`` packed bounds (``B == 1``);
        z0: ``[N, H, M]`` the log normalizer carried from a previous call (or ``None``).
    Returns:
        ``s' [B, T, H, M]`` in ``s.dtype``, ``g [B, T, H, M]`` float32 (float64 for float64 ``s``) and
        the final normalizer ``z [N, H, M]`` in the same dtype as ``g``.
    """
    if cu_seqlens is None:
        s_n, g, z = _dense_gate(s, z0)
        return s_n.to(s.dtype), g, z[:, -1]
    s_n, g, z = _dense_gate(pad_sequences(s, cu_seqlens), z0)  # [N, T_max, H, M]; padding is trailing
    lens = prepare_lens(cu_seqlens).long()
    z_last = z[torch.arange(lens.numel(), device=z.device), (lens - 1).clamp(min=0)]
    # an empty sequence keeps its z0 (none: log of an empty sum)
    empty_z = torch.full_like(z_last, float("-inf")) if z0 is None else z0.to(z_last.dtype)
    z_last = torch.where((lens == 0)[:, None, None], empty_z, z_last)
    return unpad_sequences(s_n, cu_seqlens).to(s.dtype), unpad_sequences(g, cu_seqlens), z_last
