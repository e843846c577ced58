"""fla 0.6.0's cumsum entry points (``chunk_local_cumsum``, ``chunk_global_cumsum`` and their ``_scalar`` /
``_vector`` forms) as adapters onto our stages in :mod:`fla.ops.common.cumsum`.

``g`` is ``[B, T, H]`` (scalar) or ``[B, T, H, D]`` (vector), or a packed ``[1, T, ...]`` row with
``cu_seqlens [N+1]``. The local form restarts the sum at every ``chunk_size`` tokens of each sequence,
the global form at every sequence only; ``reverse`` sums from the end instead, ``scale`` multiplies the
result. Sums are float32 (float64 for float64 inputs on the PyTorch path), then cast to ``output_dtype``
(``None``: ``g``'s dtype). CUDA tensors run the Triton stages, CPU tensors the PyTorch form below
(the dispatch rule of :mod:`fla.utils.backend`); the PyTorch form is differentiable, the Triton one is not
(as in fla).

fla's ``chunk_indices`` is a precomputed cache of :func:`fla.ops.utils.prepare_chunk_indices`: it is accepted
and recomputed here (cached per ``cu_seqlens``). ``head_first=True`` (removed in fla) and ``use_graph=True``
(fla's CUDA-graph mode with padded ``cu_seqlens``) are rejected.
"""

from __future__ import annotations

import torch

# modules, not names: fla.ops.common.layout imports fla.ops.utils.index, so this package can be initializing
# while they are (their functions are looked up at call time)
from fla.ops.common import cumsum as stages
from fla.ops.common import layout
from fla.ops.utils.varlen import pad_chunks, unpad_chunks
from fla.utils.backend import dispatch
from fla.utils.tensors import check_cu_seqlens


def _check(name: str, g: torch.Tensor, ranks: tuple[int, ...], cu_seqlens: torch.Tensor | None, kwargs: dict) -> None:
    if g.dim() not in ranks:
        want = " or ".join({3: "[B, T, H]", 4: "[B, T, H, D]"}[r] for r in ranks)
        raise ValueError(f"{name} has shape {list(g.shape)}, expected {want}")
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported (removed in fla 0.6.0): pass [B, T, H, ...] inputs")
    if kwargs.get("use_graph", False):
        raise ValueError("use_graph=True (fla's CUDA-graph mode with padded cu_seqlens) is not supported")
    check_cu_seqlens(cu_seqlens, g.shape[1], g.shape[0])


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of 2, got {chunk_size}")


def _local_torch(g: torch.Tensor, chunk_size: int, reverse: bool, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """Chunk-local cumsum in PyTorch: every chunk becomes a row of a padded ``[NC, chunk_size, ...]`` batch."""
    x, bounds = pad_chunks(g.to(torch.promote_types(g.dtype, torch.float32)), chunk_size, cu_seqlens)
    # [NC, chunk_size, ...] with zeros past each chunk's end: they add nothing to a reverse sum from the end
    out = x.flip(1).cumsum(1).flip(1) if reverse else x.cumsum(1)
    return unpad_chunks(out, bounds, *g.shape[:2])


def _local_triton(g: torch.Tensor, chunk_size: int, reverse: bool, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    chunks = layout.ChunkLayout.build(g, cu_seqlens, chunk_size)
    return stages.chunk_local_cumsum(g.contiguous(), chunks, reverse=reverse)


def _global_triton(g: torch.Tensor, reverse: bool, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    # vector gates [B, T, H, D] are H*D independent scalar gates
    return stages.global_cumsum(g.reshape(*g.shape[:2], -1).contiguous(), cu_seqlens, reverse=reverse).view(g.shape)


def _global_torch(g: torch.Tensor, reverse: bool, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    return stages.global_cumsum_torch(g, cu_seqlens, reverse=reverse)


def _finish(out: torch.Tensor, scale: float | None, output_dtype: torch.dtype | None, g: torch.Tensor) -> torch.Tensor:
    if scale is not None:
        out = out * scale
    return out.to(output_dtype or g.dtype)


def _local(name, ranks, g, chunk_size, reverse, scale, cu_seqlens, output_dtype, kwargs) -> torch.Tensor:
    _check(name, g, ranks, cu_seqlens, kwargs)
    _check_chunk_size(chunk_size)
    out = dispatch((g,), _local_torch, _local_triton, g, chunk_size, reverse, cu_seqlens)
    return _finish(out, scale, output_dtype, g)


def _global(name, ranks, s, reverse, cu_seqlens, scale, output_dtype, kwargs) -> torch.Tensor:
    _check(name, s, ranks, cu_seqlens, kwargs)
    out = dispatch((s,), _global_torch, _global_triton, s, reverse, cu_seqlens)
    return _finish(out, scale, output_dtype, s)


def chunk_local_cumsum(
    g: torch.Tensor,
    chunk_size: int,
    reverse: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float,
    chunk_indices: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """``out_t = scale * sum of g_s`` over the tokens ``s <= t`` (``s >= t`` with ``reverse``) of ``t``'s chunk.

    Args:
        g: ``[B, T, H]`` or ``[B, T, H, D]``; chunks are ``chunk_size`` (a power of 2) tokens of a sequence.
        cu_seqlens: ``[N+1]`` with ``B == 1``: chunks start at every sequence start.
    Returns:
        ``g``'s shape, ``output_dtype``.
    """
    return _local("g", (3, 4), g, chunk_size, reverse, scale, cu_seqlens, output_dtype, kwargs)


def chunk_local_cumsum_scalar(
    g: torch.Tensor,
    chunk_size: int,
    reverse: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float,
    chunk_indices: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """:func:`chunk_local_cumsum` of scalar gates ``g [B, T, H]``."""
    return _local("g", (3,), g, chunk_size, reverse, scale, cu_seqlens, output_dtype, kwargs)


def chunk_local_cumsum_vector(
    g: torch.Tensor,
    chunk_size: int,
    reverse: bool = False,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float,
    chunk_indices: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """:func:`chunk_local_cumsum` of vector gates ``g [B, T, H, D]``."""
    return _local("g", (4,), g, chunk_size, reverse, scale, cu_seqlens, output_dtype, kwargs)


def chunk_global_cumsum(
    s: torch.Tensor,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
    output_dtype: torch.dtype | None = torch.float,
    **kwargs,
) -> torch.Tensor:
    """``out_t = scale * sum of s_u`` over the tokens ``u <= t`` (``u >= t`` with ``reverse``) of ``t``'s sequence.

    Args:
        s: ``[B, T, H]`` or ``[B, T, H, D]``; cu_seqlens: ``[N+1]`` with ``B == 1``.
    Returns:
        ``s``'s shape, ``output_dtype``.
    """
    return _global("s", (3, 4), s, reverse, cu_seqlens, scale, output_dtype, kwargs)


def chunk_global_cumsum_scalar(
    s: torch.Tensor,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
    output_dtype: torch.dtype | None = torch.float,
    **kwargs,
) -> torch.Tensor:
    """:func:`chunk_global_cumsum` of ``s [B, T, H]``."""
    return _global("s", (3,), s, reverse, cu_seqlens, scale, output_dtype, kwargs)


def chunk_global_cumsum_vector(
    s: torch.Tensor,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
    output_dtype: torch.dtype | None = torch.float,
    **kwargs,
) -> torch.Tensor:
    """:func:`chunk_global_cumsum` of ``s [B, T, H, D]``."""
    return _global("s", (4,), s, reverse, cu_seqlens, scale, output_dtype, kwargs)
