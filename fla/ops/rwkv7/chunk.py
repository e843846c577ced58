"""``chunk_rwkv7``: RWKV7's time mixing as the DPLR delta rule (``q = r``, ``gk = w``), chunked."""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.chunk import check_dplr_options, dispatch_chunk_dplr
from fla.ops.generalized_delta_rule.dplr.inputs import prepare_dplr_call

RWKV7_NAMES = ("r", "k", "v", "a", "b", "w")  # the DPLR op's q, k, v, a, b, gk as RWKV7 calls them


def chunk_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RWKV7, chunked: ``S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``, ``o_t = scale * S_t^T r_t``.

    Args:
        r, k: ``[B, T, H, K]`` receptance (queries) and keys; v: ``[B, T, H, V]``.
        w: ``[B, T, H, K]`` log decays (RWKV7 layers: ``-exp(-0.5) * sigmoid(.)``).
        a, b: ``[B, T, H, K]`` the rank-one transition part (RWKV7 layers: ``a = -kk``, ``b = kk * a``).
        scale: default 1 (fla 0.6.0's; ``None`` means ``K ** -0.5``).
        initial_state: ``[N, H, K, V]``; output_final_state: also return the final state ``[N, H, K, V]`` float32.
        cu_seqlens: ``[N+1]`` int32/int64 bounds of packed sequences (then ``B == 1``).
        kwargs: fla 0.6.0's ``disable_recompute`` (as :func:`fla.ops.generalized_delta_rule.chunk_dplr_delta_rule`),
            ``cu_seqlens_cpu``, ``safe_gate``, ``chunk_size``,
            ``lower_bound`` (accepted), ``cp_context`` (only ``None``).
    Returns:
        ``o`` ``[B, T, H, V]`` (``v.dtype``) and the final state or ``None``.
    """
    check_dplr_options("chunk_rwkv7", r, kwargs)
    scale = prepare_dplr_call(r, k, v, a, b, w, scale, initial_state, cu_seqlens, names=RWKV7_NAMES)
    args = (r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens)
    inputs = (r, k, v, a, b, w, initial_state)
    return dispatch_chunk_dplr(inputs, args, kwargs.get("disable_recompute", False))


__all__ = ["RWKV7_NAMES", "chunk_rwkv7"]
