"""References of the HGRN scan ``h_t = exp(g_t) * h_{t-1} + x_t``, ``o_t = h_t`` (x, g ``[B, T, D]``).

Both compute in float32 at least (float64 inputs stay float64) and return ``o`` in ``x``'s dtype.
"""

from __future__ import annotations

import torch

from fla.ops.utils.varlen import per_sequence


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def naive_recurrent_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token by token. Returns ``o [B, T, D]`` and the final state ``[N, D]`` (or ``None``)."""
    if cu_seqlens is not None:
        o, ht = per_sequence(
            lambda xi, gi, h0: naive_recurrent_hgrn(xi, gi, h0, True), (x, g), initial_state, cu_seqlens
        )
        return o, (ht if output_final_state else None)
    dtype = _compute_dtype(x)
    B, T, D = x.shape
    h = x.new_zeros(B, D, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    outs = []
    for t in range(T):
        h = g[:, t].to(dtype).exp() * h + x[:, t].to(dtype)
        outs.append(h)
    o = torch.stack(outs, 1) if outs else x.new_zeros(B, 0, D, dtype=dtype)
    return o.to(x.dtype), (h if output_final_state else None)


def naive_chunk_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked form (dense inputs): inside a chunk ``h_t = exp(G_t) h_c + sum_{s <= t} exp(G_t - G_s) x_s``,
    ``G`` the chunk-local inclusive cumsum of ``g`` and ``h_c`` the state entering the chunk."""
    dtype = _compute_dtype(x)
    B, T, D = x.shape
    h = x.new_zeros(B, D, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    outs = []
    for start in range(0, T, chunk_size):
        xc, gc = x[:, start : start + chunk_size].to(dtype), g[:, start : start + chunk_size].to(dtype)
        C = xc.shape[1]
        G = gc.cumsum(1)  # [B, C, D]
        causal = torch.ones(C, C, dtype=torch.bool, device=x.device).tril()
        diff = (G[:, :, None] - G[:, None, :]).masked_fill(~causal[None, :, :, None], float("-inf"))  # [B, C, C, D]
        oc = G.exp() * h[:, None] + (diff.exp() * xc[:, None]).sum(2)
        outs.append(oc)
        h = oc[:, -1]
    o = torch.cat(outs, 1) if outs else x.new_zeros(B, 0, D, dtype=dtype)
    return o.to(x.dtype), (h if output_final_state else None)
