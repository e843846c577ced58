"""CUDA autocast's float32 policy on the CPU, for tests: under ``torch.autocast("cuda", torch.bfloat16)`` the ops of
CUDA's float32 list (``exp``, ``log``, ``pow``, ``sum``, ``softplus``, norms, ...) run in float32 whatever their
input dtype, which CPU autocast does not do (it keeps ``exp`` in bf16). A layer that mixes such a result with a bf16
projection passes every CPU test and fails on a GPU (HGRN's input gate did).

:func:`cuda_like_autocast` enables CPU bf16 autocast (matmuls and linears in bf16, as on CUDA) and adds the float32
list: a torch-function mode casts those functions' bf16 / fp16 inputs to float32 while autocast is on (a region that
turns autocast off, an op's own PyTorch path, is left alone, as on CUDA); autograd records the casts.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

# torch's CUDA autocast float32 list, by the names of the Python functions and methods that reach those ops
FP32_NAMES = {
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "sinh",
    "tan", "pow", "__pow__", "__rpow__", "softplus", "layer_norm", "group_norm", "norm", "vector_norm", "normalize",
    "nll_loss", "cross_entropy", "cumprod", "cumsum", "prod", "sum", "softmax", "log_softmax", "mse_loss", "l1_loss",
    "smooth_l1_loss", "kl_div", "binary_cross_entropy_with_logits", "cosine_similarity", "cdist", "dist", "renorm",
}  # fmt: skip


def _to_float32(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype in (torch.bfloat16, torch.float16):
        return x.float()
    return x


class _Float32List(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in FP32_NAMES and torch.is_autocast_enabled("cpu"):
            args, kwargs = tree_map(_to_float32, args), tree_map(_to_float32, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_like_autocast():
    """CPU bf16 autocast with CUDA's float32 op list."""
    with torch.autocast("cpu", dtype=torch.bfloat16), _Float32List():
        yield
