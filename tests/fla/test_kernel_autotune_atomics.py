"""An autotuned kernel that accumulates into an output with atomics names that output in ``reset_to_zero``.

The autotuner times each config by launching the kernel several times on the same buffers: without a reset the
atomic sums pile up over those launches. On an H100 PaTH's dw came out ~10x too large this way (its dq kernel adds
each chunk's Phi with ``tl.atomic_add``); under the interpreter the autotuners keep one config and never time, so
the CPU tests could not see it. A static check over the kernels' sources.
"""

from __future__ import annotations

import inspect

from triton.runtime.autotuner import Autotuner

from tests.fla.kernel_scan import fla_kernels


def test_atomic_outputs_are_reset_between_autotune_timings():
    kernels = {
        where: (tuners[0], fn)
        for where, (wrappers, fn) in fla_kernels().items()
        if (tuners := [w for w in wrappers if isinstance(w, Autotuner)])
    }
    assert len(kernels) > 30, f"found only {len(kernels)} autotuned kernels: the scan missed the package"
    atomic = {where: tuner for where, (tuner, fn) in kernels.items() if "tl.atomic_" in inspect.getsource(fn)}
    assert atomic, "no autotuned kernel with atomics found: the scan is broken (PaTH's dq kernel has one)"
    missing = [where for where, tuner in atomic.items() if not tuner.reset_to_zero]
    assert not missing, f"these autotuned kernels accumulate with atomics but reset nothing: {missing}"
