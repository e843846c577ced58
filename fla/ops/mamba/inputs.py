"""Argument checks of the selective-scan ops (errors name the argument and the shapes, before any launch)."""

from __future__ import annotations

import torch

from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape

MAX_STATE_SIZE = 64
"""Largest ``d_state`` the ops take (the Triton kernels keep a chunk's ``[BT, BD, d_state]`` tile on chip)."""


def check_selective_scan_inputs(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> int:
    """Validate the sequence-first inputs; return the number of sequences ``N``.

    ``x, dt, z [B, T, Di]``, ``A [Di, Ds]``, ``B, C [B, T, Ds]`` (``Ds <= 64``), ``D, dt_bias [Di]``,
    ``initial_state [N, Di, Ds]``, ``cu_seqlens [N+1]`` (then ``B == 1``). Raises ``ValueError`` (shapes,
    sizes, cu_seqlens values) or ``TypeError`` (dtypes).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x has shape {shape}, expected 3 dims [B, T, Di]")
    Bsz, T, Di = x.shape
    check_shape("dt", dt, (Bsz, T, Di), "[B, T, Di] (as x)")
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != Di:
        shape = list(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A has shape {shape}, expected [{Di}, d_state] [Di, Ds] (Di = x.shape[-1])")
    Ds = A.shape[1]
    if not 1 <= Ds <= MAX_STATE_SIZE:
        raise ValueError(f"A has d_state = {Ds} (shape {list(A.shape)}); supported: 1 .. {MAX_STATE_SIZE}")
    check_shape("B", B, (Bsz, T, Ds), "[B, T, Ds] (one B per token, shared by the channels)")
    check_shape("C", C, (Bsz, T, Ds), "[B, T, Ds] (one C per token, shared by the channels)")
    for name, t, shape, layout in (
        ("D", D, (Di,), "[Di]"),
        ("dt_bias", dt_bias, (Di,), "[Di]"),
        ("z", z, (Bsz, T, Di), "[B, T, Di] (as x)"),
    ):
        if t is not None:
            check_shape(name, t, shape, layout)
            check_dtype(name, t)
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_dtype(name, t)
    check_same_device(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_state=initial_state)
    check_same_device(x=x, cu_seqlens=cu_seqlens)
    check_cu_seqlens(cu_seqlens, total=T, batch=Bsz)
    N = Bsz if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        check_shape("initial_state", initial_state, (N, Di, Ds), "[N, Di, Ds]")
        check_dtype("initial_state", initial_state)
    return N
