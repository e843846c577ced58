"""``chunk_iplr_delta_rule``: ``S_t = (I + b_t a_t^T) S_{t-1} + k_t v_t^T`` on the DPLR chunk op (``gk = 0``)."""

import torch

from fla.ops.generalized_delta_rule.dplr import chunk_dplr_delta_rule


def chunk_iplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IPLR delta rule, chunked: ``S_t = S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``, ``o_t = scale * S_t^T q_t``
    (per head, ``S [K, V]``): :func:`chunk_dplr_delta_rule` with zero log decays.

    Args:
        q, k, a, b: ``[B, T, H, K]``; v: ``[B, T, H, V]``; scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state ``[N, H, K, V]``.
        cu_seqlens: ``[N+1]`` packed bounds (``B == 1``); cu_seqlens_cpu and kwargs (fla's ``chunk_size``):
            passed on to the DPLR op, which checks them.
    Returns:
        ``o`` ``[B, T, H, V]`` and the final state or ``None``.
    """
    gk = torch.zeros_like(k) if k.dim() == 4 else k  # a wrong rank is reported by the DPLR checks
    if cu_seqlens_cpu is not None:
        kwargs["cu_seqlens_cpu"] = cu_seqlens_cpu
    return chunk_dplr_delta_rule(q, k, v, a, b, gk, scale, initial_state, output_final_state, cu_seqlens, **kwargs)


__all__ = ["chunk_iplr_delta_rule"]
