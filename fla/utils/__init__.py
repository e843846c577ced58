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


def __getattr__(name: str):
    # fla 0.6.0's other fla.utils names (device facts, input_guard, tensor_cache, autocast_custom_fwd, ...): imported
    # on first use, as the device facts query the GPU (fla_api.py)
    import importlib

    fla_api = importlib.import_module("fla.utils.fla_api")  # not `from fla.utils import`: that asks __getattr__
    if name in fla_api.__all__:
        return getattr(fla_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
