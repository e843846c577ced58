"""Argument checks and the two-pass body shared by the GSA / ABC ops (chunk, fused_recurrent, naive)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fla.ops.common.inputs import default_scale
from fla.ops.gsa.gate import additive_gate
from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape

# pass(q, k, v, gate, scale, initial_state, output_final_state, cu_seqlens) -> (o, final state)
Pass = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def check_gsa_inputs(q, k, v, s, g, initial_state, cu_seqlens, op: str) -> int:
    """Validate a GSA / ABC call; return ``N``, the number of sequences.

    Shapes: q ``[B, T, HQ, K]`` (``HQ`` a multiple of ``H``), k ``[B, T, H, K]``, v ``[B, T, H, V]``,
    s and g ``[B, T, H, M]``, initial_state ``(hk [N, H, K, M], hv [N, H, M, V])`` plus, without ``g``,
    an optional ``z [N, H, M]``; q, k, v, s share one dtype.
    """
    if q.dim() != 4:
        raise ValueError(f"{op}: q has shape {list(q.shape)}, expected 4 dims [B, T, HQ, K]")
    B, T, HQ, K = q.shape
    check_shape("k", k, (B, T, None, K), "[B, T, H, K]")
    H = k.shape[2]
    if H == 0 or HQ % H != 0:
        raise ValueError(f"{op}: q has {HQ} heads, not a multiple of k's {H} heads")
    check_shape("v", v, (B, T, H, None), "[B, T, H, V]")
    check_shape("s", s, (B, T, H, None), "[B, T, H, M]")
    V, M = v.shape[-1], s.shape[-1]
    for name, t in (("q", q), ("k", k), ("v", v), ("s", s)):
        check_dtype(name, t)
        if t.dtype != q.dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but q has dtype {q.dtype}; q, k, v, s must share one")
    if g is not None:
        check_shape("g", g, (B, T, H, M), "[B, T, H, M] (as s)")
        check_dtype("g", g)
    check_cu_seqlens(cu_seqlens, total=T, batch=B)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    states = ()
    if initial_state is not None:
        states = tuple(initial_state)
        n_ok = (2, 3) if g is None else (2,)
        if len(states) not in n_ok:
            raise ValueError(
                f"{op}: initial_state has {len(states)} tensors, expected (hk, hv)"
                + (" or (hk, hv, z)" if g is None else "")
            )
        check_shape("initial_state[0] (hk)", states[0], (N, H, K, M), "[N, H, K, M]")
        check_shape("initial_state[1] (hv)", states[1], (N, H, M, V), "[N, H, M, V]")
        if len(states) == 3:
            check_shape("initial_state[2] (z)", states[2], (N, H, M), "[N, H, M]")
        for i, t in enumerate(states):
            check_dtype(f"initial_state[{i}]", t)
    check_same_device(q=q, k=k, v=v, s=s, g=g, **{f"initial_state[{i}]": t for i, t in enumerate(states)})
    return N


def gsa_two_pass(
    pass_k: Pass,
    pass_v: Pass,
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: tuple[torch.Tensor, ...] | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The body of every GSA / ABC op: check, ABC's additive gate when ``g`` is ``None``, GQA, then

        ok = pass_k(q, k, s, gv=g)        (keys -> slot scores, the value-side gate)
        qv = softmax(ok) over the M slots (float32)
        o  = pass_v(qv, s, v, gk=g, scale=1)  (slot scores -> values, the key-side gate)

    Returns ``o [B, T, HQ, V]`` (``v.dtype``) and ``(hk [N, H, K, M], hv [N, H, M, V])`` (float32; plus
    ``z [N, H, M]`` when ``g`` is ``None``), or ``None`` unless ``output_final_state``.
    """
    check_gsa_inputs(q, k, v, s, g, initial_state, cu_seqlens, op)
    scale = default_scale(scale, q)
    hk0, hv0, z0 = (tuple(initial_state) + (None,))[:3] if initial_state is not None else (None, None, None)
    additive = g is None
    if additive:
        s, g, zt = additive_gate(s, cu_seqlens, z0)
    groups = q.shape[2] // k.shape[2]
    if groups > 1:  # the states do not depend on q: every query head of a group shares its key head's
        k, v, s, g = (x.repeat_interleave(groups, dim=2) for x in (k, v, s, g))
        hk0, hv0 = (None if x is None else x.repeat_interleave(groups, dim=1) for x in (hk0, hv0))
    ok, hkt = pass_k(q, k, s, g, scale, hk0, output_final_state, cu_seqlens)
    qv = ok.to(torch.promote_types(ok.dtype, torch.float32)).softmax(-1).to(v.dtype)
    o, hvt = pass_v(qv, s, v, g, 1.0, hv0, output_final_state, cu_seqlens)
    if not output_final_state:
        return o, None
    if groups > 1:
        hkt, hvt = hkt[:, ::groups].contiguous(), hvt[:, ::groups].contiguous()
    return o, (hkt, hvt, zt) if additive else (hkt, hvt)
