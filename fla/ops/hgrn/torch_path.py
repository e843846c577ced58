"""The PyTorch path of the HGRN ops (CPU tensors, float64): the scan step by step, autograd for the backward."""

from __future__ import annotations

import torch

from fla.ops.utils.varlen import pad_sequences, unpad_sequences


def hgrn_scan_torch(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``o [B, T, D]`` (``x.dtype``) and the final state ``[N, D]`` (float32; float64 for float64 inputs) or ``None``.

    Varlen rows are padded to ``[N, T_max, D]`` with ``x = g = 0`` after each end: the state is unchanged
    there, so the padded batch's last state is each sequence's final state.
    """
    if cu_seqlens is not None:
        o, ht = hgrn_scan_torch(pad_sequences(x, cu_seqlens), pad_sequences(g, cu_seqlens), initial_state, True, None)
        return unpad_sequences(o, cu_seqlens), (ht if output_final_state else None)
    dtype = torch.promote_types(torch.promote_types(x.dtype, g.dtype), torch.float32)
    B, T, D = x.shape
    h = x.new_zeros(B, D, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    decay, xs = g.to(dtype).exp(), x.to(dtype)
    outs = []
    for t in range(T):
        h = torch.addcmul(xs[:, t], decay[:, t], h)
        outs.append(h)
    o = torch.stack(outs, 1) if outs else xs
    return o.to(x.dtype), (h if output_final_state else None)
