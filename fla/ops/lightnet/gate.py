"""LightNet's key normalization: per-channel log-cumulative-sum-exp of the key logits, per sequence.

For key logits ``x [B, T, H, K]`` and each channel, within each sequence (restarting at every
``cu_seqlens`` boundary)::

    z_t = log(exp(z0) + sum_{s <= t} exp(x_s))          z0: the carried log-normalizer (or -inf)
    k_t = exp(x_t - z_t)                                the normalized key, in (0, 1]
    g_t = z_{t-1} - z_t  (<= 0; 0 for a first token without z0)     the GLA log decay

This is ABC's additive slot gate with the key channels as slots, so it runs on that gate's kernels
(:func:`fla.ops.gsa.gate.additive_gate`: a tile-parallel Triton scan on CUDA, ``logcumsumexp`` on CPU),
in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch

from fla.ops.gsa.gate import additive_gate


def lightnet_gates(
    x: torch.Tensor, z0: torch.Tensor | None, cu_seqlens: torch.Tensor | None, key_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(k [B, T, H, K] key_dtype, g [B, T, H, K] float32/64, z_final [N, 1, H, K] float32/64)`` (module docstring).

    ``z0``: ``[N, 1, H, K]`` or ``None``; a ``-inf`` entry (the normalizer of an empty sequence) starts its
    channel afresh, as no ``z0`` does: its first decay is 0.
    """
    k, g, z = additive_gate(x, cu_seqlens, None if z0 is None else z0[:, 0])
    if z0 is not None:  # z_{t-1} = -inf only there (z never decreases)
        g = g.masked_fill(g == float("-inf"), 0.0)
    return k.to(key_dtype), g, z[:, None]


__all__ = ["lightnet_gates"]
