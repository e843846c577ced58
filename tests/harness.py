"""Numerical test harness: relative-error checks against float64 references.

Usage in a test::

    x = torch.randn(63, 100, requires_grad=True)
    ref_x = to_reference(x)                      # float64 leaf copy
    with using(backend):                         # "torch" or "triton" (interpreter on CPU)
        y = op(x)
    y_ref = reference_op(ref_x)
    dy = torch.randn_like(y)
    assert_close("y", y_ref, y, tol(x.dtype))
    assert_grads_close({"x": x}, {"x": ref_x}, y, y_ref, dy, tol(x.dtype))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from fla.utils import HAS_CUDA, force_backend

DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
BACKENDS = ("torch", "triton")

# Relative-error bounds by input dtype: what the dtype's rounding allows with fp32 accumulation.
_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def tol(dtype: torch.dtype, scale: float = 1.0) -> float:
    """Default relative-error bound for inputs of ``dtype`` (times ``scale``)."""
    return _TOL[dtype] * scale


def rel_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (``inf`` when ``out`` is not finite)."""
    ref64, out64 = ref.detach().double(), out.detach().double().to(ref.device)
    if not torch.isfinite(out64).all():
        return float("inf")
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float) -> None:
    """Fail unless ``out`` is finite, has ``ref``'s shape and ``rel_error(ref, out) <= ratio``."""
    assert out.shape == ref.shape, f"{name}: shape {list(out.shape)} != reference {list(ref.shape)}"
    assert torch.isfinite(ref.detach()).all(), f"{name}: the reference itself is not finite"
    n_bad = (~torch.isfinite(out.detach())).sum().item()
    assert n_bad == 0, f"{name}: {n_bad} non-finite values (NaN/Inf) in the output"
    err = rel_error(ref, out)
    assert err <= ratio, f"{name}: relative error {err:.3e} > {ratio:.1e}"


def to_reference(t: torch.Tensor | None, requires_grad: bool | None = None) -> torch.Tensor | None:
    """A float64 leaf copy of ``t`` (floating point only) that keeps ``requires_grad``."""
    if t is None:
        return None
    ref = t.detach().clone()
    if ref.is_floating_point():
        ref = ref.double()
        ref.requires_grad_(t.requires_grad if requires_grad is None else requires_grad)
    return ref


def near_zero_or_one(shape, eps: float, device=DEVICE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A gate at its extremes: each entry ``eps`` or ``1 - eps``, at random (beta near 0 and 1)."""
    near = torch.randint(0, 2, shape, device=device).to(dtype)
    return near * (1 - eps) + (1 - near) * eps


def poison_(*tensors: torch.Tensor | None) -> None:
    """Fill tensors with NaN in place (e.g. a preallocated output or an old ``.grad``)."""
    for t in tensors:
        if t is not None:
            t.data.fill_(float("nan"))


def grads(output: torch.Tensor | tuple, inputs: Mapping[str, torch.Tensor], grad_output) -> dict[str, torch.Tensor]:
    """Gradients of ``sum(output * grad_output)`` w.r.t. ``inputs`` (missing grads raise)."""
    outs = output if isinstance(output, tuple) else (output,)
    gos = grad_output if isinstance(grad_output, tuple) else (grad_output,)
    names = [k for k, v in inputs.items() if v is not None and v.requires_grad]
    pairs = [(o, g.to(o.dtype)) for o, g in zip(outs, gos) if o is not None]
    got = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in names], [g for _, g in pairs])
    return dict(zip(names, got))


def assert_grads_close(
    inputs: Mapping[str, torch.Tensor],
    ref_inputs: Mapping[str, torch.Tensor],
    output,
    ref_output,
    grad_output,
    ratio: float | Mapping[str, float],
) -> None:
    """Backprop ``grad_output`` through both graphs and compare every input gradient."""
    got = grads(output, inputs, grad_output)
    ref = grads(ref_output, ref_inputs, grad_output if not isinstance(grad_output, tuple) else grad_output)
    assert got.keys() == ref.keys(), f"gradients {sorted(got)} != reference gradients {sorted(ref)}"
    for name in got:
        r = ratio[name] if isinstance(ratio, Mapping) else ratio
        assert_close(f"d{name}", ref[name], got[name], r)


@contextlib.contextmanager
def using(backend: str) -> Iterator[None]:
    """Force ``backend`` ("torch" or "triton"; on CPU "triton" means the interpreter)."""
    with force_backend(backend):
        yield


@contextlib.contextmanager
def saved_for_backward() -> Iterator[list[torch.Tensor]]:
    """The tensors autograd keeps for the backward of what runs inside, in the order they are packed."""
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        yield saved


def child_pythonpath() -> str:
    """``PYTHONPATH`` for a subprocess: this checkout first, then whatever the parent had (e.g. wheels
    installed with ``pip --target`` on the GPU machine)."""
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def one_config_per_key(autotuner_cls: type) -> None:
    """Make every ``autotuner_cls`` (Triton's ``Autotuner``) keep one config per new autotune key instead of
    compiling and timing all of them: each autotuner takes its configs in turn (round robin over the keys it
    meets), so a test suite still runs every config somewhere, next to the first config as a fallback for a turn
    that does not fit the GPU (two compiles at most). With ``FLA_TEST_ONE_CONFIG=1`` the GPU test runs use it
    (compiles dominate their time; the configs' speed is the benchmarks' business)."""
    prune = getattr(autotuner_cls.prune_configs, "pruned_by", autotuner_cls.prune_configs)  # never wrap twice

    def prune_configs(self, kwargs):
        configs = prune(self, kwargs)
        turn = getattr(self, "_test_config_turn", 0)
        self._test_config_turn = turn + 1
        chosen = configs[turn % len(configs)]
        # with the first config (the fewest warps and stages) as the fallback: a config past the GPU's shared
        # memory fails to compile, and the autotuner times it as infinite instead of raising (as in training)
        return [chosen] if chosen is configs[0] else [chosen, configs[0]]

    prune_configs.pruned_by = prune
    autotuner_cls.prune_configs = prune_configs
