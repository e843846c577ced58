"""Launch settings shared by the chunk-pipeline kernels: block sizes, autotune configs, dot precision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import triton
from triton.runtime.autotuner import Autotuner

from fla.utils import IS_TRITON_INTERPRET
from fla.utils.sizes import next_power_of_2

# Tokens per chunk of the Triton pipeline and, for vector gates, per secondary sub-chunk.
CHUNK_SIZE = 64
SUB_CHUNK_SIZE = 16


def autotune_configs(warps: tuple[int, ...] = (2, 4), stages: tuple[int, ...] = (2, 3)) -> list[triton.Config]:
    """``num_warps x num_stages`` configs; one config under the interpreter (nothing to tune there).

    No 8-warp configs by default: fla excludes them on Hopper for kernels of this kind (compiler
    crashes / miscompiles with some triton releases).
    """
    if IS_TRITON_INTERPRET:
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=w, num_stages=s) for w in warps for s in stages]


def autotuner_of(kernel) -> Autotuner:
    """The ``Autotuner`` under a kernel's launch wrappers (:func:`fla.utils.launch.lean_launch`, heuristics);
    ``TypeError`` for anything that has none within a few wrapper levels."""
    value = kernel
    for _ in range(4):
        if isinstance(value, Autotuner):
            return value
        value = getattr(value, "fn", None)
    raise TypeError(f"{kernel!r} is not an autotuned Triton kernel")


@contextmanager
def only_configs(kernel, configs: list[triton.Config]) -> Iterator[Autotuner]:
    """Launches of ``kernel`` (autotuned) choose among ``configs`` only, inside the block; its own list and a fresh
    autotune cache come back after. Launch it through triton's path meanwhile
    (:func:`fla.utils.launch.lean_launch_disabled`): a lean launch reuses the compiled kernel it cached.
    Yields the autotuner (``best_config`` tells which config ran)."""
    tuner = autotuner_of(kernel)
    saved = tuner.configs
    tuner.configs, tuner.cache = list(configs), {}
    try:
        yield tuner
    finally:
        tuner.configs, tuner.cache = saved, {}


def given_heuristics(**flags: str | tuple[str, ...]):
    """``@triton.heuristics`` setting each constexpr flag to whether its argument is not ``None``
    (a tuple of arguments: whether any of them is given).

    ``given_heuristics(USE_G=("g", "g_gamma"), IS_VARLEN="cu_seqlens")``:
    ``USE_G = g is not None or g_gamma is not None``, ``IS_VARLEN = cu_seqlens is not None``.
    """
    return triton.heuristics({flag: _is_given(arg) for flag, arg in flags.items()})


def _is_given(arg: str | tuple[str, ...]):
    if isinstance(arg, tuple):
        return lambda a: any(a[name] is not None for name in arg)
    return lambda a: a[arg] is not None


def block_size(dim: int, cap: int = 64) -> int:
    """Power-of-two tile width for a feature dim (at least 16, the smallest ``tl.dot`` operand)."""
    return min(cap, max(16, next_power_of_2(dim)))


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact fp32 products for fp32 inputs (no TF32), native otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"
