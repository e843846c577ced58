"""Every Triton kernel casts its float scalar arguments to fp32 on entry (fla/ops/common/README.md, "Kernel
arguments"): torch.compile's inductor launches a user kernel inside a compiled graph with its Python floats typed
fp64, which made fp32 loops fail to compile (parallel_attn, NSA) and fp32 arithmetic run in fp64 elsewhere.

A static check over the kernels' sources, by argument name (the float scalars our kernels take); the compiled
form: ``python scripts/compile_check.py --float-type fp64 <tests>``."""

from __future__ import annotations

import inspect

from tests.fla.kernel_scan import fla_kernels

FLOAT_ARGS = {"scale", "eps", "label_smoothing", "logit_scale", "lse_square_scale"}


def test_kernels_cast_their_float_scalars_to_fp32():
    kernels = {where: fn for where, (_, fn) in fla_kernels().items()}
    assert len(kernels) > 60, f"found only {len(kernels)} kernels: the scan missed the package"
    missing = []
    for where, fn in kernels.items():
        params = inspect.signature(fn).parameters
        source = inspect.getsource(fn)
        for name in FLOAT_ARGS & set(params):
            if "constexpr" in str(params[name].annotation):
                continue
            if f"{name} = tl.cast({name}, tl.float32)" not in source:
                missing.append(f"{where}({name})")
    assert not missing, f"cast these float arguments to fp32 on entry: {missing}"
