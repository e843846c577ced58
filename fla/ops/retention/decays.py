"""RetNet's fixed per-head decays."""

from __future__ import annotations

import torch


def retention_log_decays(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``g_gamma [H]`` float32: ``log(1 - 2 ** (-5 - h))`` for head ``h`` (RetNet's decays)."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


_DECAYS: dict[tuple[int, torch.device], torch.Tensor] = {}  # (heads, device) -> g_gamma, never mutated


def retention_gates(q: torch.Tensor) -> torch.Tensor | None:
    """The ``g_gamma [H]`` of ``q [B, T, H, K]`` (``None`` for another rank: the op's checks then name ``q``).

    Made once per (heads, device) and reused (four small kernels and an allocation less per call), except
    while compiling or capturing a CUDA graph, where a fresh tensor belongs to the graph."""
    if q.dim() != 4:
        return None
    key = (q.shape[2], q.device)
    if torch.compiler.is_compiling() or (q.is_cuda and torch.cuda.is_current_stream_capturing()):
        return retention_log_decays(*key)
    decays = _DECAYS.get(key)
    if decays is None:
        with torch.inference_mode(False):  # a normal tensor even when first made inside inference mode
            decays = _DECAYS[key] = retention_log_decays(*key)
    return decays
