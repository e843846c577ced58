"""Argument checks of the NSA ops (errors name the argument and its value or shape), before any kernel launch."""

from __future__ import annotations

import torch

from fla.ops.attn.inputs import check_heads
from fla.ops.nsa.index import split_cu_seqlens
from fla.utils import check_cu_seqlens, check_dtype, check_same_device, check_shape

INDEX_DTYPES = (torch.int32, torch.int64)


def _positive_int(name: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")


def _index_tensor(name: str, t: torch.Tensor, shape: tuple, what: str) -> None:
    check_shape(name, t, shape, what)
    if t.dtype not in INDEX_DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}, expected torch.int32 or torch.int64")


def check_nsa_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gates: dict[str, torch.Tensor | None],
    block_indices: torch.Tensor | None,
    block_counts: torch.Tensor | int,
    block_size: int,
    window_size: int,
    cu_seqlens,
) -> None:
    """Inputs of :func:`fla.ops.nsa.parallel_nsa`: q ``[B, TQ, HQ, K]``, k ``[B, TK, H, K]``, v ``[B, TK, H, V]``
    (``TQ <= TK``: the queries are the last ``TQ`` positions), gates ``[B, TQ, HQ]``, block_indices
    ``[B, TQ, H, S]`` and block_counts ``[B, TQ, H]`` (int32/int64) or a positive int, ``cu_seqlens`` ``[N+1]`` or
    ``(cu_seqlens_q, cu_seqlens_k)`` (then ``B == 1``)."""
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, TQ, HQ, K]")
    B, TQ, HQ, K = q.shape
    check_shape("k", k, (B, None, None, K), "[B, TK, H, K]")
    check_shape("v", v, (B, k.shape[1], k.shape[2], None), "[B, TK, H, V]")
    check_heads(q, k, v)
    H, TK = k.shape[2], k.shape[1]
    for name, g in gates.items():
        if g is not None:
            check_shape(name, g, (B, TQ, HQ), "[B, TQ, HQ]")
            check_dtype(name, g)
    _positive_int("block_size", block_size)
    _positive_int("window_size", window_size, allow_zero=True)
    if window_size > 0 and gates["g_swa"] is None:
        raise ValueError(f"window_size={window_size} needs the sliding-window gate g_swa [B, TQ, HQ], got None")
    if isinstance(block_counts, torch.Tensor):
        _index_tensor("block_counts", block_counts, (B, TQ, H), "[B, TQ, H]")
    else:
        _positive_int("block_counts", block_counts)
    if block_indices is not None:
        _index_tensor("block_indices", block_indices, (B, TQ, H, None), "[B, TQ, H, S]")
    elif gates["g_cmp"] is None:
        raise ValueError("block_indices is None and g_cmp is None: the selection needs the compressed branch's scores")
    cu_q, cu_k = split_cu_seqlens(cu_seqlens)
    check_same_device(q=q, k=k, v=v, block_indices=block_indices, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, **gates)
    if cu_q is None:
        if TQ > TK:
            raise ValueError(f"q has {TQ} tokens but k only {TK}: the queries are the last TQ of the TK positions")
        return
    check_cu_seqlens(cu_q, total=TQ, batch=B)
    check_cu_seqlens(cu_k, total=TK, batch=B)
    if cu_q.numel() != cu_k.numel():
        raise ValueError(f"cu_seqlens_q has {cu_q.numel()} entries but cu_seqlens_k has {cu_k.numel()}")
    if cu_q is not cu_k and bool(((cu_q[1:] - cu_q[:-1]) > (cu_k[1:] - cu_k[:-1]).to(cu_q.device)).any()):
        raise ValueError("cu_seqlens_q has a sequence longer than its cu_seqlens_k counterpart")


def check_branch_inputs(q, k, v, TK: int, block_size: int, cu_seqlens) -> None:
    """q ``[B, TQ, HQ, K]`` and block means k ``[B, TC, H, K]``, v ``[B, TC, H, V]`` of ``TK >= TQ`` keys."""
    if q.dim() != 4:
        raise ValueError(f"q has shape {list(q.shape)}, expected 4 dims [B, TQ, HQ, K]")
    check_shape("k", k, (q.shape[0], None, None, q.shape[-1]), "[B, TC, H, K]")
    check_shape("v", v, (q.shape[0], k.shape[1], k.shape[2], None), "[B, TC, H, V]")
    check_heads(q, k, v)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    cu_q, cu_k = split_cu_seqlens(cu_seqlens)
    if cu_q is None and TK < q.shape[1]:
        raise ValueError(f"TK={TK} is smaller than the {q.shape[1]} queries")
    check_cu_seqlens(cu_q, total=q.shape[1], batch=q.shape[0])


__all__ = ["check_branch_inputs", "check_nsa_inputs"]
