"""Where ``torch.compile`` breaks the graph of one model block (what flame compiles, block by block).

    python -m benchmarks.compile_breaks --config configs/gla_340M.json [--seq-len 256] [--out FILE]

Builds the config's model on the current device (autocast bf16 on CUDA), takes its first block and
runs ``torch._dynamo.explain`` on a forward of a random ``[1, T, hidden]`` input: prints the number of
graphs, graph breaks and each distinct break reason with where it happened. Each break splits the
compiled block, and everything between two graphs runs eagerly (Python launches, no fusion).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections import Counter

import torch
import torch._dynamo


def explain_block(config_path: str, seq_len: int) -> dict:
    """``{"model_type", "graphs", "graph_breaks", "ops", "reasons": [[count, reason], ...]}`` of block 0."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla  # noqa: F401 - registers fla's model types
    from fla.utils import default_device
    from flame.parallelize import find_blocks

    device = default_device()
    config = AutoConfig.from_pretrained(config_path)
    model = AutoModelForCausalLM.from_config(config).to(device)
    block = find_blocks(model)[0]
    x = torch.randn(1, seq_len, config.hidden_size, device=device, requires_grad=True)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    torch._dynamo.reset()
    torch._logging.set_logs(dynamo=logging.ERROR)  # the breaks are reported below, not as warnings
    with amp:
        report = torch._dynamo.explain(block)(x)
    reasons = Counter(_reason(b) for b in report.break_reasons)
    return {
        "model_type": config.model_type,
        "graphs": report.graph_count,
        "graph_breaks": report.graph_break_count,
        "ops": report.op_count,
        "reasons": [[n, r] for r, n in reasons.most_common()],
    }


def _reason(brk) -> str:
    where = brk.user_stack[-1] if getattr(brk, "user_stack", None) else None
    at = f" at {where.filename.rsplit('/', 2)[-1]}:{where.lineno}" if where is not None else ""
    return f"{str(brk.reason).splitlines()[0][:200]}{at}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="HF model config .json file(s)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    for path in args.config:
        result = {"config": path, **explain_block(path, args.seq_len)}
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
