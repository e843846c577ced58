"""Host cost of our Triton ops: microseconds of Python + launch per call and per kernel, CUDA only.

At a tiny shape (B=1, T=128, H=4, D=64, bf16) the device finishes each kernel long before the host
has launched the next one, so the wall time of a loop of calls is the host's time. Per op and for
``fwd`` (no autograd) and ``fwd + bwd``: host microseconds per call, device kernels per call (counted
with ``torch.profiler``), and host microseconds per kernel. A training step of a 24-layer model
launches these ops ~50 times forward and backward, so this is where a host-bound step spends its time:

    python -m benchmarks.ops.launch_overhead --out outputs/launch_overhead.md
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.report import emit

B, T, H, D = 1, 128, 4, 64
COLUMNS = ("op", "pass", "host_us_per_call", "kernels_per_call", "host_us_per_kernel")


def _ops() -> dict[str, tuple[Callable, list[torch.Tensor]]]:
    """``name -> (fn, inputs)``: ``fn(*inputs)`` returns one tensor (the output gradient's shape)."""
    from fla.modules import linear_cross_entropy, rms_norm, rms_norm_gated, swiglu
    from fla.ops import chunk_delta_rule, chunk_gated_delta_rule, chunk_gla, chunk_simple_gla

    dev, dt = "cuda", torch.bfloat16

    def rand(*shape, dtype=dt):
        return torch.randn(*shape, device=dev, dtype=dtype)

    q, k, v = rand(B, T, H, D), F.normalize(rand(B, T, H, D).float(), dim=-1).to(dt), rand(B, T, H, D)
    gk = (F.logsigmoid(rand(B, T, H, D, dtype=torch.float32)) / 16).to(dt)
    g = F.logsigmoid(rand(B, T, H, dtype=torch.float32)).to(dt)
    beta = torch.rand(B, T, H, device=dev).sigmoid().to(dt)
    x, w = rand(B * T, H * D), torch.ones(H * D, device=dev, dtype=dt)
    head, target = rand(32000, H * D) * 0.02, torch.randint(0, 32000, (B * T,), device=dev)
    return {
        "chunk_gla": (lambda *a: chunk_gla(*a)[0], [q, k, v, gk]),
        "chunk_simple_gla": (lambda *a: chunk_simple_gla(*a)[0], [q, k, v, g]),
        "chunk_delta_rule": (lambda *a: chunk_delta_rule(*a)[0], [q, k, v, beta]),
        "chunk_gated_delta_rule": (lambda *a: chunk_gated_delta_rule(*a)[0], [q, k, v, g, beta]),
        "rms_norm": (lambda a, b: rms_norm(a, b, None), [x, w]),
        "rms_norm_gated": (lambda a, b, c: rms_norm_gated(a, b, c), [x, x.clone(), w]),
        "swiglu": (swiglu, [x, x.clone()]),
        "linear_cross_entropy": (lambda a, b: linear_cross_entropy(a, target, b).reshape(1), [x, head]),
    }


def host_us(call: Callable[[], object], reps: int = 200) -> float:
    """Mean wall microseconds of ``call()`` over ``reps`` back-to-back calls (synchronized once at each end)."""
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - t0) / reps


def kernels_per_call(call: Callable[[], object], reps: int = 5) -> float:
    """Device kernels (and memsets / copies) launched per ``call()``, from a ``torch.profiler`` trace."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            call()
        torch.cuda.synchronize()
    n = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return n / reps


def rows() -> list[dict]:
    """One row per op and pass (``fwd`` under no_grad, ``fwd+bwd`` with a fixed output gradient)."""
    out = []
    for name, (fn, inputs) in _ops().items():
        leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
        grad = torch.randn_like(fn(*leaves).float()).to(fn(*leaves).dtype)

        def fwd(fn=fn, leaves=leaves):
            with torch.no_grad():
                fn(*leaves)

        def fwd_bwd(fn=fn, leaves=leaves, grad=grad):
            fn(*leaves).backward(grad)
            for t in leaves:
                t.grad = None

        for pass_name, call in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            us, n = host_us(call), kernels_per_call(call)
            out.append({"op": name, "pass": pass_name, "host_us_per_call": round(us, 1), "kernels_per_call": n,
                        "host_us_per_kernel": round(us / n, 1) if n else "-"})  # fmt: skip
            print(out[-1], flush=True)
    return out


def to_markdown(table: list[dict], command: str) -> str:
    import triton

    head = (
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}\n\nshape B={B}, T={T}, H={H}, D={D}, bf16; host_us: mean of 200 "
        f"back-to-back calls (device idle-waiting on the host); kernels: torch.profiler device events per call\n\n"
        f"command: `{command}`\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in table]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("launch_overhead needs a CUDA device (the host cost of Triton launches)")
    import sys

    text = to_markdown(rows(), "python -m benchmarks.ops.launch_overhead " + " ".join(sys.argv[1:]))
    emit(text, args.out)


if __name__ == "__main__":
    main()
