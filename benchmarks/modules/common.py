"""Shared timing/memory helpers for module benchmarks (CUDA only).

Each ``benchmarks/modules/bench_<name>.py`` defines ``rows() -> list[dict]`` built with
:func:`measure`; ``python -m benchmarks.modules.run_all`` collects them into one table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _peak_mib(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(
    module: str, shape: str, dtype: torch.dtype, impl: str, fwd: Callable[[], torch.Tensor], grad_inputs=()
) -> dict:
    """Time ``fwd`` and ``fwd + backward`` (do_bench medians, ms) and the fwd+bwd peak memory.

    Args:
        fwd: builds the output from pre-made inputs (a tensor, or a tuple whose first item is used).
        grad_inputs: leaf tensors whose ``.grad`` is reset between backward runs.
    Returns:
        a row ``{module, shape, dtype, impl, fwd_ms, fwdbwd_ms, peak_mib}``.
    """
    from triton.testing import do_bench

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    probe = first(fwd())
    grad = torch.randn_like(probe) if probe.requires_grad and probe.dim() > 0 else None

    def fwd_bwd():
        for t in grad_inputs:
            t.grad = None
        out = first(fwd())
        if grad is None:
            out.backward()
        else:
            out.backward(grad)

    with torch.no_grad():
        fwd_ms = do_bench(fwd, return_mode="median")
    fwdbwd_ms = do_bench(fwd_bwd, grad_to_none=list(grad_inputs), return_mode="median")
    peak = _peak_mib(fwd_bwd)
    return {
        "module": module,
        "shape": shape,
        "dtype": str(dtype).replace("torch.", ""),
        "impl": impl,
        "fwd_ms": round(float(fwd_ms), 4),
        "fwdbwd_ms": round(float(fwdbwd_ms), 4),
        "peak_mib": round(peak, 1),
    }
