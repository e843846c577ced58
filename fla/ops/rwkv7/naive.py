"""RWKV7 in plain PyTorch: the DPLR delta rule's references with RWKV7's argument names and order."""

from __future__ import annotations

import torch

from fla.ops.generalized_delta_rule.dplr.naive import naive_chunk_dplr_delta_rule, naive_recurrent_dplr_delta_rule


def naive_recurrent_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float | None = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token RWKV7 (float64 inputs give a float64 result); shapes as :func:`fla.ops.rwkv7.chunk_rwkv7`."""
    return naive_recurrent_dplr_delta_rule(r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens)


def naive_chunk_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float | None = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked RWKV7 in PyTorch (the CPU path of :func:`fla.ops.rwkv7.chunk_rwkv7`)."""
    return naive_chunk_dplr_delta_rule(r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens)


__all__ = ["naive_chunk_rwkv7", "naive_recurrent_rwkv7"]
