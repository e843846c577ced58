"""Chunked LightNet attention: the key normalization (:mod:`fla.ops.lightnet.gate`) + chunked GLA."""

from __future__ import annotations

import torch

from fla.ops.common.inputs import check_gated_inputs
from fla.ops.gla.chunk import chunk_gla
from fla.ops.lightnet.gate import lightnet_gates
from fla.utils import check_dtype, check_shape

State = tuple[torch.Tensor | None, torch.Tensor | None]


def prepare_lightnet_call(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: State | None,
    state_v_first: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Check the inputs (``ValueError`` naming the argument, before any launch); return ``(h0, z0)``
    with ``h0`` in the ``[N, H, K, V]`` layout of the GLA ops."""
    if initial_state is None:
        h0, z0 = None, None
    elif isinstance(initial_state, (tuple, list)) and len(initial_state) == 2:
        h0, z0 = initial_state
    else:
        raise ValueError(
            "initial_state must be None or a pair (recurrent_state [N, H, K, V] or None, log_normalizer "
            f"[N, 1, H, K] or None), got {type(initial_state).__name__}"
        )
    if h0 is not None and state_v_first:
        if h0.dim() != 4:
            raise ValueError(f"initial_state[0] has shape {list(h0.shape)}, expected [N, H, V, K] (state_v_first)")
        h0 = h0.transpose(-1, -2)
    N = check_gated_inputs(q, k, v, initial_state=h0, cu_seqlens=cu_seqlens)
    if z0 is not None:
        B, T, H, K = q.shape
        check_shape("initial_state[1] (log normalizer)", z0, (N, 1, H, K), "[N, 1, H, K]")
        check_dtype("initial_state[1] (log normalizer)", z0)
        if z0.device != q.device:
            raise ValueError(f"initial_state[1] is on {z0.device}, q on {q.device}")
    return h0, z0


def finish_state(ht: torch.Tensor | None, state_v_first: bool) -> torch.Tensor | None:
    return ht.transpose(-1, -2) if ht is not None and state_v_first else ht


def chunk_lightnet(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """LightNet attention, chunked (fla 0.6.0's signature): GLA whose keys and decays come from the
    running log-sum-exp ``z`` of the key logits (see ``README.md``)::

        z_t = logaddexp(z_{t-1}, k_t)
        S_t = exp(z_{t-1} - z_t) S_{t-1} + exp(k_t - z_t)^T v_t,    o_t = scale * q_t S_t

    Args:
        q: ``[B, T, H, K]`` queries; k: ``[B, T, H, K]`` key logits; v: ``[B, T, H, V]``.
        scale: default ``K ** -0.5``.
        initial_state: ``(recurrent_state [N, H, K, V], log_normalizer [N, 1, H, K])``, either may be ``None``.
        output_final_state: also return the final recurrent state (float32).
        state_v_first: recurrent states are ``[N, H, V, K]`` instead.
        cu_seqlens: ``[N+1]`` packed sequence bounds (``B == 1``); the normalization restarts per sequence.
    Returns:
        ``o [B, T, H, V]`` (``v.dtype``) and ``(final recurrent state or None, final log normalizer
        [N, 1, H, K] float32)``; the log normalizer is always returned, as in fla.
    """
    h0, z0 = prepare_lightnet_call(q, k, v, initial_state, state_v_first, cu_seqlens)
    k, g, zt = lightnet_gates(k, z0, cu_seqlens, q.dtype)
    o, ht = chunk_gla(q, k, v, g, scale=scale, initial_state=h0, output_final_state=output_final_state,
                      cu_seqlens=cu_seqlens)  # fmt: skip
    return o, (finish_state(ht, state_v_first), zt)
