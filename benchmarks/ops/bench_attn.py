"""fla's Triton softmax attention (``parallel_attn``) against the Attention layer's backends, CUDA only.

Times ``fwd`` (no autograd) and ``fwd + bwd`` with ``triton.testing.do_bench`` medians (ms), B*T = 32k
tokens (``--tokens``), HQ=16, D=128, bf16, causal, T in {2048, 4096, 8192}, for: ``parallel_attn``
(plain, GQA 4:1, sliding window 512, FoX gate), the layer's default path (``attention_dense``: flash-attn
when installed, else SDPA) and SDPA itself: its default backend choice, and FLASH_ATTENTION (FA2, the
reference of parallel_attn's speed target) and CUDNN_ATTENTION forced. A case that raises (e.g. a torch
build without cuDNN attention) gets its error in the table; each row is printed to stderr as it is
measured (a time limit keeps the rows so far). The input to choosing the layer's backend
(``fla.layers.attention_backends``):

    python -m benchmarks.ops.bench_attn --out outputs/ops_attn.md
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks.report import emit


def _inputs(B: int, T: int, kv_heads: int, gate: bool):
    H, D = 16, 128
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

    return {  # the speed target's rows first
        "parallel_attn": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 16, False, None),
        "sdpa_flash": (sdpa_forced(SDPBackend.FLASH_ATTENTION), 16, False, None),
        "sdpa_cudnn": (sdpa_forced(SDPBackend.CUDNN_ATTENTION), 16, False, None),
        "parallel_forgetting_attn": (lambda q, k, v, g, w: parallel_attn(q, k, v, g, window_size=w), 16, True, None),
        "parallel_attn_gqa4": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 4, False, None),
        "parallel_attn_window512": (lambda q, k, v, g, w: parallel_attn(q, k, v, window_size=w), 16, False, 512),
        "layer_default": (lambda q, k, v, g, w: attention_dense(q, k, v, window_size=w), 16, False, None),
        "layer_default_window512": (lambda q, k, v, g, w: attention_dense(q, k, v, window_size=w), 16, False, 512),
        "sdpa": (sdpa, 16, False, None),
    }


def _time(do_bench, fn, inputs, window) -> tuple[float, float]:
    """Medians (ms) of the forward without autograd and of forward + backward."""
    do = torch.randn_like(inputs[0])
    with torch.no_grad():
        fwd = do_bench(lambda: fn(*inputs, window))
    return fwd, do_bench(lambda: fn(*inputs, window).backward(do))


def run(lengths: list[int], tokens: int, names: list[str] | None = None) -> str:
    from triton.testing import do_bench

    rows = [
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}",
        "",
        "| op | B | T | fwd_ms | fwdbwd_ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    cases = _cases()
    unknown = sorted(set(names or ()) - set(cases))
    if unknown:
        raise SystemExit(f"bench_attn: unknown cases {unknown}; known: {sorted(cases)}")
    for name, (fn, kv_heads, gate, window) in cases.items():
        if names and name not in names:
            continue
        for T in lengths:
            B = max(1, tokens // T)
            try:
                fwd, fwdbwd = (f"{x:.3f}" for x in _time(do_bench, fn, _inputs(B, T, kv_heads, gate), window))
            except Exception as e:  # noqa: BLE001 - a backend this build lacks: a result too
                fwd, fwdbwd = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}", "-"
            rows.append(f"| {name} | {B} | {T} | {fwd} | {fwdbwd} |")
            print(rows[-1], file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--tokens", type=int, default=32768, help="B * T: the batch is tokens // T")
    parser.add_argument("--cases", nargs="*", default=None, help="only these rows (default: all)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_attn needs a CUDA device")
    emit(run(args.lengths, args.tokens, args.cases), args.out)


if __name__ == "__main__":
    main()
