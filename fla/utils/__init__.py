"""Shared utilities of fla: the backend dispatch rule, version flags, tensor guards, project constants."""

from fla.utils.backend import (
    HAS_CUDA,
    IS_TRITON_INTERPRET,
    TORCH_VERSION,
    TRITON_VERSION,
    Backend,
    default_device,
    device_capability,
    force_backend,
    is_hopper,
    select_backend,
)
from fla.utils.constants import DTYPE_ALIASES, DTYPES, IGNORE_INDEX, dtype_from_name
from fla.utils.sizes import cdiv, next_power_of_2
from fla.utils.tensors import (
    FLOAT_DTYPES,
    check_cu_seqlens,
    check_dtype,
    check_same_device,
    check_same_shape,
    check_shape,
    contiguous,
    empty,
    empty_like,
    last_call_cache,
    poison_outputs,
)

__all__ = [
    "DTYPE_ALIASES",
    "DTYPES",
    "IGNORE_INDEX",
    "dtype_from_name",
    "cdiv",
    "next_power_of_2",
    "HAS_CUDA",
    "IS_TRITON_INTERPRET",
    "TORCH_VERSION",
    "TRITON_VERSION",
    "Backend",
    "default_device",
    "device_capability",
    "force_backend",
    "is_hopper",
    "select_backend",
    "FLOAT_DTYPES",
    "check_cu_seqlens",
    "check_dtype",
    "check_same_device",
    "check_same_shape",
    "check_shape",
    "contiguous",
    "empty",
    "empty_like",
    "last_call_cache",
    "poison_outputs",
]
