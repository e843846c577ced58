"""Lightning attention's fixed per-head decays (a function of the head, the layer and the depth)."""

from __future__ import annotations

import torch


def check_layer_args(layer_idx: int, num_layers: int) -> None:
    """``ValueError`` naming them unless ``num_layers >= 1`` and ``0 <= layer_idx < num_layers`` (ints)."""
    for name, value in (("layer_idx", layer_idx), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got num_layers={num_layers}")
    if not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx={layer_idx} must lie in [0, num_layers={num_layers})")


def lightning_log_decays(
    num_heads: int, layer_idx: int, num_layers: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``g_gamma [H]`` float32: ``-(8 / H) * (1 - layer_idx / num_layers) * h`` for head ``h`` (fla's slopes).

    Head 0 never decays; later heads and earlier layers decay faster.
    """
    check_layer_args(layer_idx, num_layers)
    slope = 8 / num_heads * (1 - layer_idx / num_layers)
    return -slope * torch.arange(num_heads, dtype=torch.float32, device=device)


_DECAYS: dict[tuple[int, int, int, torch.device], torch.Tensor] = {}  # never mutated


def lightning_gates(q: torch.Tensor, layer_idx: int, num_layers: int) -> torch.Tensor | None:
    """The ``g_gamma [H]`` of ``q [B, T, H, K]`` (``None`` for another rank: the op's checks then name ``q``).

    The layer arguments are checked first (before any launch). Made once per (heads, layer, depth,
    device) and reused, except while compiling or capturing a CUDA graph (a fresh tensor then belongs
    to the graph)."""
    check_layer_args(layer_idx, num_layers)
    if q.dim() != 4:
        return None
    key = (q.shape[2], layer_idx, num_layers, q.device)
    if torch.compiler.is_compiling() or (q.is_cuda and torch.cuda.is_current_stream_capturing()):
        return lightning_log_decays(*key)
    decays = _DECAYS.get(key)
    if decays is None:
        with torch.inference_mode(False):  # a normal tensor even when first made inside inference mode
            decays = _DECAYS[key] = lightning_log_decays(*key)
    return decays
