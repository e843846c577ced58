"""GSA in plain PyTorch: the token-by-token reference and the chunked CPU path."""

from __future__ import annotations

import torch

from fla.ops.common.chunk_torch import chunk_gated_torch_op, chunk_value_gated_torch_op
from fla.ops.common.recurrent_torch import recurrent_gated_torch_op
from fla.ops.gsa.inputs import gsa_two_pass


def _recurrent_k(q, k, s, g, scale, h0, output_final_state, cu_seqlens):
    return recurrent_gated_torch_op(q, k, s, None, None, None, g, scale, h0, output_final_state, cu_seqlens)


def _recurrent_v(qv, s, v, g, scale, h0, output_final_state, cu_seqlens):
    return recurrent_gated_torch_op(qv, s, v, None, None, g, None, scale, h0, output_final_state, cu_seqlens)


def _chunk_k(q, k, s, g, scale, h0, output_final_state, cu_seqlens):
    return chunk_value_gated_torch_op(q, k, s, g, scale, h0, output_final_state, cu_seqlens)


def _chunk_v(qv, s, v, g, scale, h0, output_final_state, cu_seqlens):
    return chunk_gated_torch_op(qv, s, v, None, None, g, scale, h0, output_final_state, cu_seqlens)


def naive_recurrent_gsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Token-by-token GSA, the reference (float64 inputs give float64 results); arguments and returns of
    :func:`fla.ops.gsa.chunk_gsa` (``o`` float32 / float64)."""
    return gsa_two_pass(
        _recurrent_k, _recurrent_v, "naive_recurrent_gsa", q, k, v, s, g, scale, initial_state,
        output_final_state, cu_seqlens,
    )  # fmt: skip


def naive_chunk_gsa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: tuple[torch.Tensor, ...] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Chunked GSA in PyTorch (the CPU path of :func:`fla.ops.gsa.chunk_gsa`); same contract as it."""
    return gsa_two_pass(
        _chunk_k, _chunk_v, "naive_chunk_gsa", q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens
    )
