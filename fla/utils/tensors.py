"""Tensor guards (shape, dtype, device, contiguity) and output allocation.

Outputs of fla kernels are allocated with :func:`empty` / :func:`empty_like`. Under
``with poison_outputs():`` (the test suite enables it) they are filled with NaN, so an
element a kernel forgets to write shows up as NaN instead of stale memory.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

_local = threading.local()


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """Fill every buffer from :func:`empty` / :func:`empty_like` with NaN (ints with -1)."""
    previous = getattr(_local, "poison", False)
    _local.poison = enabled
    try:
        yield
    finally:
        _local.poison = previous


def _maybe_poison(t: torch.Tensor) -> torch.Tensor:
    if getattr(_local, "poison", False):
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def empty(*shape: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.empty`` for kernel outputs (NaN-filled under :func:`poison_outputs`)."""
    return _maybe_poison(torch.empty(*shape, dtype=dtype, device=device))


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.empty_like`` (contiguous) for kernel outputs (NaN-filled when poisoning)."""
    return _maybe_poison(torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device))


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int | None], what: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` when ``t.shape`` does not match ``expected``.

    ``None`` in ``expected`` matches any size. ``what`` explains the expected layout,
    e.g. ``"[B, T, H, K]"``.
    """
    shape = t.shape
    ok = len(shape) == len(expected)
    if ok:
        for s, e in zip(shape, expected):  # a plain loop: this runs on every op call (host time)
            if e is not None and e != s:
                ok = False
                break
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        layout = f" {what}" if what else ""
        raise ValueError(f"{name} has shape {list(shape)}, expected {want}{layout}")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """Raise ``ValueError`` naming both arguments when their shapes differ."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {list(a.shape)} but {name_b} has shape {list(b.shape)}")


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(name: str, t: torch.Tensor, allowed: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    """Raise ``TypeError`` naming ``name`` when ``t.dtype`` is not in ``allowed``."""
    if t.dtype not in allowed:
        raise TypeError(f"{name} has dtype {t.dtype}, expected one of {[str(d) for d in allowed]}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``ValueError`` when the given tensors are not all on one device."""
    device = None
    for t in tensors.values():  # the common case (one device) without building containers
        if t is not None:
            if device is None:
                device = t.device
            elif t.device != device:
                break
    else:
        return
    listing = ", ".join(f"{k} on {v.device}" for k, v in tensors.items() if v is not None)
    raise ValueError(f"inputs are on different devices: {listing}")


def check_cu_seqlens(cu_seqlens: torch.Tensor | None, total: int, batch: int) -> None:
    """Validate FlashAttention-style ``cu_seqlens`` ``[N+1]`` for ``batch == 1`` inputs of ``total`` tokens."""
    if cu_seqlens is None:
        return
    if batch != 1:
        raise ValueError(f"cu_seqlens given, so the batch size must be 1 (packed varlen), got batch size {batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D [N+1] with N >= 1, got shape {list(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens has dtype {cu_seqlens.dtype}, expected torch.int32 or torch.int64")
    _check_cu_seqlens_values(cu_seqlens, total)


def last_call_cache(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return the previous result when called again with the same, unmodified ``cu_seqlens`` tensor
    (its first argument) and the same other arguments.

    For helpers that read ``cu_seqlens`` on the host (a device sync): every layer of a model calls
    them with the same tensor, so a batch pays for one sync instead of one per layer. An in-place
    change of the tensor moves its version counter and misses the cache. The result is shared
    between callers: never modify it in place. A call that raises caches nothing.
    """
    last: tuple | None = None

    @functools.wraps(fn)
    def wrapper(cu_seqlens: torch.Tensor, *args, **kwargs):
        nonlocal last
        key = (cu_seqlens._version, cu_seqlens.device, args, tuple(sorted(kwargs.items())))
        if last is not None and last[0] is cu_seqlens and last[1] == key:
            return last[2]
        out = fn(cu_seqlens, *args, **kwargs)
        last = (cu_seqlens, key, out)
        return out

    return wrapper


@last_call_cache
def _check_cu_seqlens_values(cu_seqlens: torch.Tensor, total: int) -> None:
    """The checks of :func:`check_cu_seqlens` that read the values (a device sync)."""
    first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
    if first != 0 or last != total:
        raise ValueError(f"cu_seqlens must start at 0 and end at the token count {total}, got {first} .. {last}")
    if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise ValueError("cu_seqlens must be non-decreasing")


def contiguous(fn: Callable) -> Callable:
    """Decorator: make every tensor argument contiguous before calling ``fn``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [a.contiguous() if isinstance(a, torch.Tensor) else a for a in args]
        if kwargs:
            kwargs = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)

    return wrapper
