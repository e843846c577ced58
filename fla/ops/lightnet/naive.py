"""LightNet attention in plain PyTorch: a token-by-token reference written from the README formulas
(independent of :mod:`fla.ops.lightnet.gate`), and the chunked CPU form."""

from __future__ import annotations

import torch

from fla.ops.gla.naive import naive_chunk_gla
from fla.ops.lightnet.chunk import State, finish_state, prepare_lightnet_call
from fla.ops.lightnet.gate import lightnet_gates


def naive_recurrent_lightnet(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Token-by-token reference (float64 inputs give float64 results), one sequence at a time."""
    h0, z0 = prepare_lightnet_call(q, k, v, initial_state, state_v_first, cu_seqlens)
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = K**-0.5 if scale is None else scale
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    bounds = [(b, 0, T) for b in range(B)] if cu_seqlens is None else [
        (0, int(a), int(e)) for a, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())
    ]  # fmt: skip
    o = q.new_zeros(B, T, H, V)
    states, norms = [], []
    for n, (b, bos, eos) in enumerate(bounds):
        S = q.new_zeros(H, K, V) if h0 is None else h0[n].to(dtype)
        z = q.new_full((H, K), float("-inf")) if z0 is None else z0[n, 0].to(dtype)
        for t in range(bos, eos):
            z_new = torch.logaddexp(z, k[b, t])
            decay = torch.where(torch.isinf(z), torch.ones_like(z), torch.exp(z - z_new))
            S = decay[..., None] * S + torch.exp(k[b, t] - z_new)[..., None] * v[b, t, :, None, :]
            o[b, t] = scale * torch.einsum("hk,hkv->hv", q[b, t], S)
            z = z_new
        states.append(S)
        norms.append(z)
    ht = torch.stack(states) if output_final_state else None
    o = o.to(v.dtype if dtype == torch.float32 else dtype)
    return o, (finish_state(ht, state_v_first), torch.stack(norms)[:, None])


def naive_chunk_lightnet(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Key normalization + :func:`fla.ops.gla.naive_chunk_gla` (the PyTorch chunked form)."""
    h0, z0 = prepare_lightnet_call(q, k, v, initial_state, state_v_first, cu_seqlens)
    k, g, zt = lightnet_gates(k, z0, cu_seqlens, q.dtype)
    o, ht = naive_chunk_gla(q, k, v, g, scale=scale, initial_state=h0, output_final_state=output_final_state,
                            cu_seqlens=cu_seqlens)  # fmt: skip
    return o, (finish_state(ht, state_v_first), zt)
