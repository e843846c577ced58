"""Backend detection and the one dispatch rule of fla.

Rule: an op whose tensors live on a CUDA device runs its Triton kernels; an op on CPU
tensors runs its pure-PyTorch path. Two switches override the rule:

* ``FLA_BACKEND=triton|torch`` in the environment (read at call time), or
* ``with force_backend("triton"): ...`` (thread-local, takes precedence).

Forcing ``triton`` on CPU tensors is only meaningful under ``TRITON_INTERPRET=1``, which
Triton reads when a kernel is *decorated*: set it before ``fla`` is imported (the test
suite does so in ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, TypeVar

import torch
import triton

from fla.utils.caching import host_cache

Backend = Literal["triton", "torch"]
R = TypeVar("R")
_BACKENDS = ("triton", "torch")
_local = threading.local()


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


TORCH_VERSION = _parse_version(torch.__version__)
TRITON_VERSION = _parse_version(triton.__version__)

IS_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_CUDA = torch.cuda.is_available()


@host_cache
def device_capability() -> tuple[int, int]:
    """(major, minor) compute capability of the current CUDA device, (0, 0) without one."""
    return torch.cuda.get_device_capability() if HAS_CUDA else (0, 0)


def is_hopper() -> bool:
    """True on sm_90 (H100/H200)."""
    return device_capability()[0] == 9


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if HAS_CUDA else "cpu")


def _forced() -> Backend | None:
    forced = getattr(_local, "backend", None) or os.environ.get("FLA_BACKEND") or None
    if forced is not None and forced not in _BACKENDS:
        raise ValueError(f"FLA_BACKEND={forced!r} is not one of {_BACKENDS}")
    return forced


def select_backend(*tensors: torch.Tensor | None) -> Backend:
    """The dispatch rule: which implementation an op runs for these inputs.

    Args:
        tensors: the op's tensor inputs (``None`` entries are ignored).
    Returns:
        ``"triton"`` for CUDA tensors (or when forced), ``"torch"`` otherwise, and for float64 inputs
        (the kernels compute in fp32 at most: float64 is the reference precision the PyTorch path keeps).
    """
    forced = _forced()
    if forced is not None:
        if forced == "triton" and not IS_TRITON_INTERPRET and not any(t is not None and t.is_cuda for t in tensors):
            raise RuntimeError(
                "backend 'triton' was forced for CPU tensors but TRITON_INTERPRET=1 was not set before fla was imported"
            )
        return forced
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return "torch"
    return "triton" if any(t is not None and t.is_cuda for t in tensors) else "torch"


def dispatch(
    inputs: Iterable[torch.Tensor | None],
    torch_impl: Callable[..., R],
    triton_impl: Callable[..., R],
    /,
    *args,
    **kwargs,
) -> R:
    """Apply the dispatch rule: call ``torch_impl`` or ``triton_impl`` with ``*args, **kwargs``, as
    :func:`select_backend` decides for ``inputs``.

    The two implementations of an op take the same arguments, so a public op reads
    ``return dispatch((q, k, v, ...), op_torch, op_triton, q, k, v, ...)`` instead of an ``if`` of its own.
    """
    impl = torch_impl if select_backend(*inputs) == "torch" else triton_impl
    return impl(*args, **kwargs)


@contextlib.contextmanager
def force_backend(backend: Backend | None) -> Iterator[None]:
    """Run the enclosed ops with ``backend`` (``None`` restores the automatic rule)."""
    if backend is not None and backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {_BACKENDS}")
    previous = getattr(_local, "backend", None)
    _local.backend = backend
    try:
        yield
    finally:
        _local.backend = previous
