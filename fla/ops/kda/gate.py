"""KDA's input maps: the per-key-channel log decay from the raw gate and beta from its logits (the shared
maps of :mod:`fla.ops.common.fla_options`), and the KDA-specific input checks.

Gate (``use_gate_in_kernel``), per value head ``h`` and key channel ``c``::

    g_{t,h,c} = -exp(A_log_h) * softplus(g_raw_{t,h,c} + dt_bias_{h,c})                   (default)
    g_{t,h,c} = lower_bound * sigmoid(exp(A_log_h) * (g_raw_{t,h,c} + dt_bias_{h,c}))      (lower_bound set;
                                                                   without A_log: sigmoid(g_raw + dt_bias))

Both are <= 0 (decays in (0, 1]); the second is bounded below by ``lower_bound``. They are differentiable
PyTorch maps computed in float32 (float64 stays float64), ahead of the delta stages.
"""

from __future__ import annotations

import torch

from fla.ops.common.fla_options import decay_from_logits, sigmoid_beta, state_from_kv, state_to_kv
from fla.utils import check_dtype, check_shape


def kda_gate(
    g: torch.Tensor,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
) -> torch.Tensor:
    """The log decay ``[B, T, HV, K]`` (float32, float64 for float64 ``g``) from the raw gate ``g``
    (:func:`fla.ops.common.fla_options.decay_from_logits` of a per-channel gate).

    Args:
        g: ``[B, T, HV, K]`` raw gate; A_log: ``[HV]`` (may be ``None`` only with ``lower_bound``);
        dt_bias: ``[HV * K]`` or ``None``; lower_bound: ``None`` or the bound (< 0) of the sigmoid form.
    """
    return decay_from_logits(g, A_log, dt_bias, lower_bound)


def check_kda_inputs(
    q: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    use_gate_in_kernel: bool,
    use_beta_sigmoid_in_kernel: bool,
    allow_neg_eigval: bool,
    lower_bound: float | None,
) -> None:
    """The KDA-specific checks (the delta stages check the rest): ``g`` ``[B, T, HV, K]`` and, for the gate
    in the op, ``A_log`` ``[HV]`` and ``dt_bias`` ``[HV * K]``. Raise ``ValueError`` / ``TypeError``
    naming the argument."""
    if q.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)} and v {list(v.shape)}, expected [B, T, H, K] / [B, T, HV, V]")
    B, T, _, K = q.shape
    HV = v.shape[2]
    check_shape("g", g, (B, T, HV, K), "[B, T, HV, K] (a log decay per value head and key channel)")
    check_dtype("g", g)
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("allow_neg_eigval=True requires use_beta_sigmoid_in_kernel=True")
    if lower_bound is not None and not lower_bound < 0:
        raise ValueError(f"lower_bound must be negative (a log decay bound), got {lower_bound}")
    if not use_gate_in_kernel:
        return
    if A_log is None and lower_bound is None:
        raise ValueError("A_log must be given when use_gate_in_kernel=True and lower_bound is not set")
    if A_log is not None:
        check_shape("A_log", A_log.reshape(-1) if A_log.numel() == HV else A_log, (HV,), "[HV]")
        check_dtype("A_log", A_log)
    if dt_bias is not None:
        if dt_bias.numel() != HV * K:
            raise ValueError(f"dt_bias has shape {list(dt_bias.shape)}, expected [HV * K] = [{HV * K}]")
        check_dtype("dt_bias", dt_bias)


def prepare_kda_gates(
    g: torch.Tensor,
    beta: torch.Tensor | None,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    use_gate_in_kernel: bool,
    use_beta_sigmoid_in_kernel: bool,
    lower_bound: float | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The log decay and beta the delta stages take: :func:`kda_gate` of ``g`` (when ``use_gate_in_kernel``)
    and ``sigmoid(beta)`` (when ``use_beta_sigmoid_in_kernel``; the ``2x`` of ``allow_neg_eigval`` is applied
    by the delta stages)."""
    if use_gate_in_kernel:
        g = kda_gate(g, A_log, dt_bias, lower_bound)
    return g, sigmoid_beta(beta, use_beta_sigmoid_in_kernel)


__all__ = ["check_kda_inputs", "kda_gate", "prepare_kda_gates", "state_from_kv", "state_to_kv"]
