"""Generation speed of an HF-format model folder: prompt processing (prefill) and decoding tokens/s and memory.

    python benchmarks/generation.py --model <HF dir or config .json> [--compare-transformer] \
        [--prompt-len 2048 --gen-len 256 --batch-size 8 --dtype bfloat16 --device cuda --repeats 3 --out FILE.md]

Per model: one prefill forward over ``batch x prompt_len`` random tokens with ``use_cache=True``, then
``gen_len`` greedy decoding steps of one token each through the model's ``FLACache`` (the loop
``generate()`` runs, without its bookkeeping). Reported: medians over ``--repeats`` runs after one
warm-up run (Triton compilation and autotuning excluded), the peak memory of the runs (CUDA
allocator peak; on CPU the process peak RSS, which never goes down, so it is only an upper bound for
the second model) and the size of the cache after the last token (KV cache vs recurrent state).

``--compare-transformer`` adds a randomly initialized Transformer++ (``configs/transformer_340M.json``)
with the model's hidden size, layers, vocabulary and MLP width and head dim 64, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER_BASE = ROOT / "configs" / "transformer_340M.json"
COLUMNS = ("model", "params_M", "prefill_tok_s", "decode_tok_s", "prefill_ms", "decode_ms_per_token", "peak_gib")
COLUMNS += ("cache_mib",)


@dataclass
class GenStats:
    """One model's medians: prefill and decode tokens/s (all sequences), per-step times, memory."""

    model: str
    params_M: float
    prefill_tok_s: float
    decode_tok_s: float
    prefill_ms: float
    decode_ms_per_token: float
    peak_gib: float
    cache_mib: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def cache_bytes(cache) -> int:
    """Bytes of every tensor held by an ``FLACache`` (all layers and slots)."""

    def walk(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (tuple, list)):
            return sum(walk(v) for v in value)
        return 0

    return sum(walk(layer) for layer in cache)


@torch.inference_mode()
def greedy_decode(model, prompt: torch.Tensor, gen_len: int, device: torch.device):
    """Prefill ``prompt [B, T]``, then greedy decoding up to ``gen_len`` new tokens.

    Returns ``(tokens [B, gen_len], prefill seconds, decode seconds, cache)``. The first generated
    token comes from the prefill logits; each decode step feeds the last token.
    """
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    _sync(device)
    t1 = time.perf_counter()
    cache, tokens = out.past_key_values, [token]
    for _ in range(gen_len - 1):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    _sync(device)
    t2 = time.perf_counter()
    return torch.cat(tokens, 1), t1 - t0, t2 - t1, cache


def measure(model, name: str, batch_size: int, prompt_len: int, gen_len: int, repeats: int, seed: int = 0):
    """:class:`GenStats` of ``model`` (already on its device, eval mode) after one warm-up run."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (batch_size, prompt_len), generator=g).to(device)
    greedy_decode(model, prompt, min(gen_len, 2), device)  # warm-up: kernels compiled and autotuned
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prefill, decode = [], []
    for _ in range(repeats):
        _, p, d, cache = greedy_decode(model, prompt, gen_len, device)
        prefill.append(p)
        decode.append(d / max(gen_len - 1, 1))
    p, d = statistics.median(prefill), statistics.median(decode)
    n_params = sum(x.numel() for x in model.parameters())
    return GenStats(
        model=name,
        params_M=round(n_params / 1e6, 2),
        prefill_tok_s=round(batch_size * prompt_len / p, 1),
        decode_tok_s=round(batch_size / d, 1) if gen_len > 1 else float("nan"),
        prefill_ms=round(1e3 * p, 3),
        decode_ms_per_token=round(1e3 * d, 3),
        peak_gib=round(_peak_gib(device), 3),
        cache_mib=round(cache_bytes(cache) / 1024**2, 3),
    )


def transformer_like(config, min_positions: int):
    """A Transformer++ config with ``config``'s hidden size, layers, vocabulary and MLP width (head dim 64)."""
    from fla.models import TransformerConfig

    base = json.loads(TRANSFORMER_BASE.read_text())
    hidden = config.hidden_size
    heads = hidden // 64 if hidden % 64 == 0 else getattr(config, "num_heads", 1)
    base.update(
        hidden_size=hidden,
        num_hidden_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=None,
        vocab_size=config.vocab_size,
        hidden_ratio=getattr(config, "hidden_ratio", base["hidden_ratio"]),
        intermediate_size=getattr(config, "intermediate_size", None),
        max_position_embeddings=max(base["max_position_embeddings"], min_positions),
    )
    base.pop("architectures", None)
    base.pop("model_type", None)
    return TransformerConfig(**base)


def build_models(args) -> Iterator[tuple[str, Any]]:
    """Yields ``(label, model)``: the model folder, then the matching Transformer++ when asked.

    One at a time, so the first model is freed before the second is built (given the caller drops it).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from flame.eval.perplexity import load_model

    if args.model.endswith(".json") and Path(args.model).is_file():  # a config: random init
        import fla  # noqa: F401 - registers fla's model types

        cuda = str(args.device).startswith("cuda")
        dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
        torch.manual_seed(args.seed)
        config = AutoConfig.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(args.device).eval()
    else:
        model = load_model(args.model, args.device, args.dtype)
    dtype, config = next(model.parameters()).dtype, model.config
    yield f"{config.model_type} ({Path(args.model).stem})", model
    del model
    if args.compare_transformer:
        torch.manual_seed(args.seed)
        other = transformer_like(config, args.prompt_len + args.gen_len)
        yield (
            "transformer++ (random init, same size)",
            AutoModelForCausalLM.from_config(other, dtype=dtype).to(args.device).eval(),
        )


def to_markdown(rows: list[GenStats], args, command: str) -> str:
    """The table with a header naming the device, the versions and the command."""
    import triton

    cuda = str(args.device).startswith("cuda")
    dev = torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)"
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    head = (
        f"device: {dev} | torch {torch.__version__} | triton {triton.__version__} | python "
        f"{platform.python_version()}\n\nbatch {args.batch_size}, prompt {args.prompt_len}, generate "
        f"{args.gen_len}, {dtype}; medians of {args.repeats} runs after a warm-up. "
        "tok/s count all sequences of the batch; peak_gib: CUDA allocator peak (CPU: process peak RSS); "
        "cache_mib: FLACache tensors after the last token\n\n"
        f"command: `{command}`\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(getattr(r, c)) for c in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    from fla.utils import DTYPES, default_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF model folder, or a config .json (random init)")
    parser.add_argument("--compare-transformer", action="store_true", help="add a Transformer++ of the same size")
    parser.add_argument("--prompt-len", type=int, default=2048)
    parser.add_argument("--gen-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    for key in ("prompt_len", "gen_len", "batch_size", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def main(argv: list[str] | None = None) -> list[GenStats]:
    """Run the benchmark; prints (and optionally writes) the table; returns the rows."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))  # `python benchmarks/generation.py` from anywhere
    rows = []
    for name, model in build_models(args):
        rows.append(measure(model, name, args.batch_size, args.prompt_len, args.gen_len, args.repeats, args.seed))
        del model  # before the next one is built
        if str(args.device).startswith("cuda"):
            torch.cuda.empty_cache()
    argv = sys.argv[1:] if argv is None else argv
    table = to_markdown(rows, args, "python benchmarks/generation.py " + " ".join(argv))
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
