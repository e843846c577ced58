"""mamba_ssm-style entry points (channels-first layout), as fla's Mamba layer calls them.

``selective_scan_fn`` takes ``u, delta, z [B, Di, L]`` and ``B, C [B, Ds, L]`` (mamba_ssm's layout) and runs
:func:`~fla.ops.mamba.chunk_selective_scan`; ``selective_state_update`` advances a cached state by one token.
Input-independent ``B`` / ``C`` (``[Di, Ds]``) and grouped ``[B, G, Ds, L]`` ones are not supported.
"""

from __future__ import annotations

import torch

from fla.ops.mamba.chunk import chunk_selective_scan
from fla.ops.mamba.fused_recurrent import fused_recurrent_selective_scan


def _channels_first(name: str, t: torch.Tensor | None, what: str) -> torch.Tensor | None:
    if t is None:
        return None
    if not isinstance(t, torch.Tensor) or t.dim() != 3:
        shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} has shape {shape}, expected {what} (grouped or input-independent: not supported)")
    return t.transpose(1, 2)


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """mamba_ssm's ``selective_scan_fn`` on our kernels.

    Args:
        u, delta: ``[B, Di, L]``; A: ``[Di, Ds]``; B, C: ``[B, Ds, L]``; D, delta_bias: ``[Di]``; z: ``[B, Di, L]``.
        delta_softplus: ``delta = softplus(delta + delta_bias)``.
        return_last_state: also return the last state ``[N, Di, Ds]`` (float32).
        initial_state: ``[N, Di, Ds]`` (an extra of ours); cu_seqlens: ``[N+1]`` packed sequences (``B == 1``).
    Returns:
        ``out [B, Di, L]`` in ``u``'s dtype, and the last state when asked for.
    """
    x = _channels_first("u", u, "[B, Di, L]")
    y, ht = chunk_selective_scan(
        x, _channels_first("delta", delta, "[B, Di, L]"), A, _channels_first("B", B, "[B, Ds, L]"),
        _channels_first("C", C, "[B, Ds, L]"), D=D, z=_channels_first("z", z, "[B, Di, L]"), dt_bias=delta_bias,
        dt_softplus=delta_softplus, initial_state=initial_state, output_final_state=return_last_state,
        cu_seqlens=cu_seqlens,
    )  # fmt: skip
    out = y.transpose(1, 2)
    return (out, ht) if return_last_state else out


@torch.no_grad()
def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> torch.Tensor:
    """One decoding step: ``state [N, Di, Ds]`` is advanced in place; ``x, dt, z [N, Di]``, ``B, C [N, Ds]``.

    Returns ``out [N, Di]`` in ``x``'s dtype (mamba_ssm's signature, without its head dims).
    """
    for name, t, what in (("x", x, "[N, Di]"), ("B", B, "[N, Ds]")):
        if t.dim() != 2:
            raise ValueError(f"{name} has shape {list(t.shape)}, expected {what} (one token per sequence)")
    tok = [None if t is None else t[:, None] for t in (x, dt, B, C, z)]
    y, ht = fused_recurrent_selective_scan(
        tok[0], tok[1], A, tok[2], tok[3], D=D, z=tok[4], dt_bias=dt_bias, dt_softplus=dt_softplus,
        initial_state=state, output_final_state=True,
    )  # fmt: skip
    state.copy_(ht)
    return y[:, 0]
