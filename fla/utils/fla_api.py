"""fla 0.6.0's ``fla.utils`` names that code built on its ops imports: device facts, decorators, test helpers.

Kernels and layers written against fla import these from ``fla.utils`` (``input_guard``, ``autocast_custom_fwd``,
``tensor_cache``, ``IS_NVIDIA_HOPPER``, ``check_shared_mem``, ...). They are reached through ``fla.utils``'
module ``__getattr__`` (this module is imported on first use: the device facts query the GPU once) and behave as
fla 0.6.0 documents them:

* device facts: ``device`` (the torch device type kernels run on: ``"cuda"`` for NVIDIA and AMD, ``"xpu"``,
  else ``"cuda"`` as fla's), ``device_platform`` (``"cuda"``, ``"hip"``, ``"xpu"`` or ``"cpu"``),
  ``device_name``, ``device_torch_lib``, the ``IS_*`` flags and their lowercase aliases, ``TRITON_ABOVE_x_y_z``,
  :func:`get_multiprocessor_count`, :func:`get_device_capability`, :func:`check_shared_mem`,
  :func:`custom_device_ctx`;
* decorators: :func:`input_guard` (contiguous tensor arguments, the first tensor's device current),
  :func:`tensor_cache` (the last few results by argument identity), ``autocast_custom_fwd`` /
  ``autocast_custom_bwd`` (``torch.amp.custom_fwd`` / ``custom_bwd`` for ``device``), :func:`checkpoint`;
* test helpers: :func:`get_abs_err`, :func:`get_err_ratio`, :func:`assert_close` (fla's RMS error ratio).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import platform
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.utils.checkpoint
import triton

from fla.utils.backend import TRITON_VERSION, device_capability
from fla.utils.env import env_switch


def _platform() -> str:
    if torch.cuda.is_available():
        return "hip" if torch.version.hip else "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


device_platform = _platform()
device_name = {"hip": "cuda"}.get(device_platform, device_platform)  # torch's name for the device type
# fla's `device` is the accelerator's torch device type, "cuda" on a machine without one (its amp decorators and
# device contexts are built for it)
device = "xpu" if device_platform == "xpu" else "cuda"
device_torch_lib = getattr(torch, device)

IS_AMD = device_platform == "hip"
IS_ARM = platform.machine().lower() in ("aarch64", "arm64")
IS_INTEL = device_platform == "xpu"
IS_NVIDIA = device_platform == "cuda"
_CAPABILITY = device_capability() if IS_NVIDIA else (0, 0)
IS_NVIDIA_HOPPER = IS_NVIDIA and _CAPABILITY[0] == 9
IS_NVIDIA_BLACKWELL = IS_NVIDIA and _CAPABILITY[0] in (10, 12)
IS_TF32_SUPPORTED = IS_NVIDIA and _CAPABILITY[0] >= 8
IS_GATHER_SUPPORTED = hasattr(triton.language, "gather")
IS_TMA_SUPPORTED = IS_NVIDIA and _CAPABILITY[0] >= 9 and hasattr(triton.language, "make_tensor_descriptor")
is_amd, is_arm, is_intel, is_nvidia = IS_AMD, IS_ARM, IS_INTEL, IS_NVIDIA
is_nvidia_hopper, is_nvidia_blackwell = IS_NVIDIA_HOPPER, IS_NVIDIA_BLACKWELL
is_tf32_supported, is_gather_supported, is_tma_supported = IS_TF32_SUPPORTED, IS_GATHER_SUPPORTED, IS_TMA_SUPPORTED


TRITON_ABOVE_3_4_0 = TRITON_VERSION >= (3, 4, 0)
TRITON_ABOVE_3_5_1 = TRITON_VERSION >= (3, 5, 1)
TRITON_ABOVE_3_6_0 = TRITON_VERSION >= (3, 6, 0)
TRITON_ABOVE_3_7_1 = TRITON_VERSION >= (3, 7, 1)
TRITON_ABOVE_3_8_0 = TRITON_VERSION >= (3, 8, 0)

# shared memory per block (opt-in bytes) that fla's kernels size their tiles for, by architecture name
_SHARED_MEMORY = {"ada": 101376, "ampere": 166912, "hopper": 232448}
_DEFAULT_SHARED_MEMORY = 102400


@cache
def get_multiprocessor_count(tensor_idx: int = 0) -> int:
    """Streaming multiprocessors of GPU ``tensor_idx`` (1 without one)."""
    if device_platform in ("cuda", "hip"):
        return torch.cuda.get_device_properties(tensor_idx).multi_processor_count
    return 1


@cache
def get_device_capability(device_index: int = 0) -> tuple[int, int]:
    """``(major, minor)`` compute capability of CUDA device ``device_index``."""
    major, minor = torch.cuda.get_device_capability(device_index)
    return int(major), int(minor)


@cache
def check_shared_mem(arch: str = "none", tensor_idx: int = 0) -> bool:
    """Whether GPU ``tensor_idx`` has at least the shared memory per block of ``arch`` (``"ada"``, ``"ampere"``,
    ``"hopper"``; another name: 100 KiB). False without a GPU."""
    if device_platform not in ("cuda", "hip"):
        return False
    props = torch.cuda.get_device_properties(tensor_idx)
    have = getattr(props, "shared_memory_per_block_optin", None) or props.shared_memory_per_block
    return have >= _SHARED_MEMORY.get(arch.lower(), _DEFAULT_SHARED_MEMORY)


def custom_device_ctx(index: int | None):
    """``device_torch_lib.device(index)`` (the device current inside the block), or a no-op context."""
    if index is None or device_platform == "cpu":
        return contextlib.nullcontext()
    return device_torch_lib.device(index)


autocast_custom_fwd = functools.partial(torch.amp.custom_fwd, device_type=device)
autocast_custom_bwd = functools.partial(torch.amp.custom_bwd, device_type=device)


def input_guard(
    fn: Callable | None = None, *, no_guard_contiguous: bool | list[str] | tuple[str, ...] | set[str] = False
) -> Callable:
    """Decorator: tensor arguments made contiguous (all but those ``no_guard_contiguous`` names, or none when it is
    ``True``) and the first tensor argument's device made current for the call. ``@input_guard`` or
    ``@input_guard(no_guard_contiguous=[...])``."""

    def decorate(fn: Callable) -> Callable:
        names = list(inspect.signature(fn).parameters)
        skip = set(no_guard_contiguous) if isinstance(no_guard_contiguous, (list, tuple, set)) else set()

        def guard(name: str, value: Any) -> Any:
            if not isinstance(value, torch.Tensor) or no_guard_contiguous is True or name in skip:
                return value
            return value.contiguous()

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args = tuple(guard(names[i] if i < len(names) else f"__arg_{i}", a) for i, a in enumerate(args))
            kwargs = {name: guard(name, value) for name, value in kwargs.items()}
            first = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
            with custom_device_ctx(None if first is None else first.device.index):
                return fn(*args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate


def tensor_cache(fn: Callable) -> Callable:
    """Decorator: the results of the last ``FLA_TENSOR_CACHE_SIZE`` (default 4) calls, returned again for a call
    whose arguments are the same objects (``is``) under the same keywords; ``FLA_DISABLE_TENSOR_CACHE=1``: off."""
    results: deque = deque(maxlen=int(os.environ.get("FLA_TENSOR_CACHE_SIZE", "4")))

    def same(call_args, call_kwargs, args, kwargs) -> bool:
        return (
            len(call_args) == len(args)
            and call_kwargs.keys() == kwargs.keys()
            and all(a is b for a, b in zip(call_args, args))
            and all(call_kwargs[k] is v for k, v in kwargs.items())
        )

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if env_switch("FLA_DISABLE_TENSOR_CACHE", default=False):
            return fn(*args, **kwargs)
        for call_args, call_kwargs, result in results:
            if same(call_args, call_kwargs, args, kwargs):
                return result
        result = fn(*args, **kwargs)
        results.append((args, kwargs, result))
        return result

    return wrapper


def checkpoint(fn: Callable) -> Callable:
    """Decorator: ``fn`` under activation checkpointing (``torch.utils.checkpoint``, non-reentrant)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)

    return wrapper


def get_abs_err(x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest absolute difference."""
    return (x.detach() - y.detach()).abs().max().item()


def get_err_ratio(x: torch.Tensor, y: torch.Tensor) -> float:
    """RMS of ``x - y`` over the RMS of ``x`` (fla's test measure)."""
    err = (x.detach().double() - y.detach().double()).square().mean().sqrt().item()
    return err / (x.detach().double().square().mean().sqrt().item() + 1e-8)


def assert_close(prefix: str, ref: torch.Tensor, tri: torch.Tensor, ratio: float, warning: bool = False,
                 err_atol: float = 1e-6) -> None:  # fmt: skip
    """fla's test assertion: passes when the largest absolute error is at most ``err_atol`` or the RMS error ratio
    (:func:`get_err_ratio`) is below ``ratio``; NaNs fail; ``warning=True`` warns instead of failing."""
    abs_err, err_ratio = get_abs_err(ref, tri), get_err_ratio(ref, tri)
    if abs_err <= err_atol:
        return
    message = f"{prefix:>16} diff: {abs_err:.6f} ratio: {err_ratio:.6f}"
    assert not torch.isnan(ref).any(), f"{prefix}: NaN in ref"
    assert not torch.isnan(tri).any(), f"{prefix}: NaN in tri"
    if warning:
        if err_ratio > ratio:
            import warnings

            warnings.warn(message, stacklevel=2)
    else:
        assert err_ratio < ratio, message


FLA_API = [
    "IS_AMD",
    "IS_ARM",
    "IS_GATHER_SUPPORTED",
    "IS_INTEL",
    "IS_NVIDIA",
    "IS_NVIDIA_BLACKWELL",
    "IS_NVIDIA_HOPPER",
    "IS_TF32_SUPPORTED",
    "IS_TMA_SUPPORTED",
    "TRITON_ABOVE_3_4_0",
    "TRITON_ABOVE_3_5_1",
    "TRITON_ABOVE_3_6_0",
    "TRITON_ABOVE_3_7_1",
    "TRITON_ABOVE_3_8_0",
    "assert_close",
    "autocast_custom_bwd",
    "autocast_custom_fwd",
    "check_shared_mem",
    "checkpoint",
    "custom_device_ctx",
    "device",
    "device_name",
    "device_platform",
    "device_torch_lib",
    "get_abs_err",
    "get_device_capability",
    "get_err_ratio",
    "get_multiprocessor_count",
    "input_guard",
    "is_amd",
    "is_arm",
    "is_gather_supported",
    "is_intel",
    "is_nvidia",
    "is_nvidia_blackwell",
    "is_nvidia_hopper",
    "is_tf32_supported",
    "is_tma_supported",
    "tensor_cache",
]
__all__ = FLA_API
