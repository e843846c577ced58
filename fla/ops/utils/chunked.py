"""Per-chunk tensor ops of fla 0.6.0's ``fla.ops.utils`` in PyTorch: :func:`mean_pooling` and :func:`solve_tril`.

Both cut every sequence of a ``[B, T, ...]`` batch (or a packed ``[1, T, ...]`` row with ``cu_seqlens``) into
chunks of ``chunk_size`` tokens, from each sequence start (the last chunk of a sequence may be shorter), and lay
the chunks out as the rows of a padded batch (:func:`fla.ops.utils.varlen.pad_chunks`). Differentiable.
"""

from __future__ import annotations

import torch

from fla.ops.utils.varlen import pad_chunks, unpad_chunks
from fla.utils.tensors import check_cu_seqlens


def mean_pooling(x: torch.Tensor, chunk_size: int, cu_seqlens: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Mean of the tokens of every chunk.

    Args:
        x: ``[B, T, H, D]``; cu_seqlens: ``[N+1]`` with ``B == 1``.
    Returns:
        ``[B, ceil(T / chunk_size), H, D]`` (dense) or ``[1, NC, H, D]`` (varlen: the chunks of all sequences in
        order), ``x``'s dtype; a shorter last chunk is averaged over its own tokens.
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported (removed in fla 0.6.0): pass [B, T, H, D] inputs")
    if x.dim() != 4:
        raise ValueError(f"x has shape {list(x.shape)}, expected [B, T, H, D]")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    check_cu_seqlens(cu_seqlens, x.shape[1], x.shape[0])
    B, T, H, D = x.shape
    chunks, bounds = pad_chunks(x.to(torch.promote_types(x.dtype, torch.float32)), chunk_size, cu_seqlens)
    counts = (bounds[1:] - bounds[:-1]).to(chunks.dtype)  # [NC] tokens per chunk
    means = chunks.sum(1) / counts[:, None, None]  # [NC, H, D]
    return means.view(B if cu_seqlens is None else 1, -1, H, D).to(x.dtype)


def solve_tril(
    A: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float,
) -> torch.Tensor:
    """``(I + A)^-1`` for every chunk's strictly lower triangular block of ``A``.

    Args:
        A: ``[B, T, H, BT]`` with ``BT`` in (16, 32, 64): row ``t`` of a chunk holds that chunk's row of a
            ``BT x BT`` matrix per head; only the part below the diagonal is read. A shorter last chunk
            (``n`` rows) uses the leading ``n x n`` block.
        cu_seqlens: ``[N+1]`` with ``B == 1``: chunks start at every sequence start.
        chunk_indices: fla's precomputed chunk list; accepted, recomputed here.
        output_dtype: ``None`` keeps ``A``'s dtype.
    Returns:
        ``[B, T, H, BT]``: each chunk's rows of ``(I + tril(A, -1))^-1`` (zero above the diagonal).
    """
    if A.dim() != 4 or A.shape[-1] not in (16, 32, 64):
        raise ValueError(f"A has shape {list(A.shape)}, expected [B, T, H, BT] with BT in (16, 32, 64)")
    check_cu_seqlens(cu_seqlens, A.shape[1], A.shape[0])
    B, T, H, BT = A.shape
    chunks, bounds = pad_chunks(A.to(torch.promote_types(A.dtype, torch.float32)), BT, cu_seqlens)
    NC, C = chunks.shape[:2]  # C <= BT: the longest chunk
    L = chunks[..., :C].permute(0, 2, 1, 3).tril(-1)  # [NC, H, C, C]; padding rows are zero
    eye = torch.eye(C, dtype=L.dtype, device=L.device).expand_as(L)
    # (I + L) is unit lower triangular, and so is its inverse: a padding row of zeros changes no earlier row
    Ai = torch.linalg.solve_triangular(eye + L, eye, upper=False, unitriangular=True)
    Ai = torch.nn.functional.pad(Ai.permute(0, 2, 1, 3), (0, BT - C))  # [NC, C, H, BT]
    return unpad_chunks(Ai, bounds, B, T).to(output_dtype or A.dtype)
