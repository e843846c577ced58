"""fla's Triton softmax attention (``parallel_attn``) against the Attention layer's backends, CUDA only.

Times ``fwd`` (no autograd) and ``fwd + bwd`` with ``triton.testing.do_bench`` medians (ms), B=4, HQ=16,
D=128, bf16, causal, T in {2048, 4096, 8192}, for: ``parallel_attn`` (plain, GQA 4:1, sliding window 512,
FoX gate), the layer's default path (``attention_dense``: flash-attn when installed, else SDPA) and SDPA
itself: its default backend choice, and FLASH_ATTENTION (FA2, the reference of parallel_attn's speed target) and
CUDNN_ATTENTION forced. The input to choosing the layer's backend (``fla.layers.attention_backends``):

    python -m benchmarks.ops.bench_attn --out outputs/ops_attn.md
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.report import emit


def _inputs(T: int, kv_heads: int, gate: bool):
    B, H, D = 4, 16, 128
    q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, T, kv_heads, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, T, kv_heads, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = F.logsigmoid(torch.randn(B, T, H, device="cuda") + 4).requires_grad_() if gate else None
    return q, k, v, g


def _cases():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fla.layers.attention_backends import attention_dense
    from fla.ops.attn import parallel_attn

    def sdpa(q, k, v, g, window):
        o = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=True, enable_gqa=True)
        return o.transpose(1, 2)

    def sdpa_forced(backend):
        def fn(q, k, v, g, window):
            with sdpa_kernel(backend):
                return sdpa(q, k, v, g, window)

        return fn

    return {
        "parallel_attn": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 16, False, None),
        "parallel_attn_gqa4": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 4, False, None),
        "parallel_attn_window512": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 16, False, 512),
        "parallel_forgetting_attn": (lambda q, k, v, g, w: parallel_attn(q, k, v, g, window_size=w), 16, True, None),
        "layer_default": (lambda q, k, v, g, w: attention_dense(q, k, v, window_size=w), 16, False, None),
        "layer_default_window512": (lambda q, k, v, g, w: attention_dense(q, k, v, window_size=w), 16, False, 512),
        "sdpa": (sdpa, 16, False, None),
        "sdpa_flash": (sdpa_forced(SDPBackend.FLASH_ATTENTION), 16, False, None),
        "sdpa_cudnn": (sdpa_forced(SDPBackend.CUDNN_ATTENTION), 16, False, None),
    }


def _time(do_bench, fn, inputs, window) -> tuple[float, float]:
    """Medians (ms) of the forward without autograd and of forward + backward."""
    do = torch.randn_like(inputs[0])
    with torch.no_grad():
        fwd = do_bench(lambda: fn(*inputs, window))
    return fwd, do_bench(lambda: fn(*inputs, window).backward(do))


def run(lengths: list[int]) -> str:
    from triton.testing import do_bench

    rows = [
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}",
        "",
        "| op | T | fwd_ms | fwdbwd_ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, (fn, kv_heads, gate, window) in _cases().items():
        for T in lengths:
            fwd, fwdbwd = _time(do_bench, fn, _inputs(T, kv_heads, gate), window)
            rows.append(f"| {name} | {T} | {fwd:.3f} | {fwdbwd:.3f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_attn needs a CUDA device")
    emit(run(args.lengths), args.out)


if __name__ == "__main__":
    main()
