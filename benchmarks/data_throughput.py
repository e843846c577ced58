"""Tokens/s of the data pipeline alone (read -> tokenize -> pack -> batch), no model.

Uses the offline sample corpus and its byte-level BPE tokenizer (generated into a temporary
folder unless --data/--tokenizer are given). Every row runs on one CPU core: tokenizer
parallelism is off, and the loader runs either in the main process or in one worker process.

    python -m benchmarks.data_throughput [--seq-len 2048 --batch-size 8 --tokens 1e6 --repeats 3] [--out FILE.md]
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core: before tokenizers is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def tokenizer_only(tokenizer, texts: list[str], batch: int, repeats: int) -> list[float]:
    """Tokens/s of the Rust tokenizer on ``texts`` in batches of ``batch`` documents (no pipeline), per repeat."""
    backend = tokenizer.backend_tokenizer
    rates = []
    for _ in range(repeats):
        t0, n = time.perf_counter(), 0
        for i in range(0, len(texts), batch):
            n += sum(len(e.ids) for e in backend.encode_batch_fast(texts[i : i + batch], add_special_tokens=False))
        rates.append(n / (time.perf_counter() - t0))
    return rates


def pipeline(cfg, tokenizer, *, batch_size: int, seq_len: int, varlen: bool, tokens: float, repeats: int):
    """Tokens/s of ``build_dataloader`` batches over ``repeats`` consecutive spans of ``tokens`` tokens,
    timed from the first batch on (worker start excluded)."""
    from flame.data import build_dataloader

    sizes = dict(batch_size=batch_size, seq_len=seq_len, context_len=seq_len // 4 if varlen else None, varlen=varlen)
    loader = build_dataloader(cfg, tokenizer, dp_rank=0, dp_world_size=1, **sizes)
    it = iter(loader)
    next(it)
    steps = max(int(tokens // (batch_size * seq_len)), 1)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        rates.append(steps * batch_size * seq_len / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset path (default: generate the sample corpus)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the generated sample tokenizer)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tokens", type=float, default=1e6, help="tokens per timed span")
    p.add_argument("--repeats", type=int, default=3, help="timed spans per row (median reported)")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from flame.data import DataConfig, build_tokenizer
    from flame.tools.sample_data import make_sample_data

    tmp = tempfile.TemporaryDirectory()
    if args.data is None or args.tokenizer is None:
        t0 = time.perf_counter()
        make_sample_data(tmp.name)
        print(f"generated the sample corpus in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    data = args.data or str(Path(tmp.name) / "data")
    tokenizer = build_tokenizer(args.tokenizer or str(Path(tmp.name) / "tokenizer"))

    rows = []
    files = sorted(Path(data).glob("train-*.jsonl")) if Path(data).is_dir() else []
    if files:
        import json

        texts = [json.loads(line)["text"] for line in files[0].read_text().splitlines()]
        rates = tokenizer_only(tokenizer, texts, 64, args.repeats)
        rows.append(("tokenizer alone (encode_batch_fast, 64 docs/call)", "-", rates))
    for workers in (0, 1):
        for varlen in (False, True):
            cfg = DataConfig(dataset=data, num_workers=workers)
            bs = 1 if varlen else args.batch_size
            sl = args.seq_len * args.batch_size if varlen else args.seq_len
            rates = pipeline(
                cfg, tokenizer, batch_size=bs, seq_len=sl, varlen=varlen, tokens=args.tokens, repeats=args.repeats
            )
            where = "main process" if workers == 0 else "1 loader worker"
            rows.append((f"pipeline, {'varlen' if varlen else 'fixed'} [{bs}x{sl}]", where, rates))

    import datasets
    import tokenizers
    import torchdata
    import transformers

    head = [
        f"machine: {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores visible), one core used, "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, datasets {datasets.__version__}, "
        f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}, torchdata "
        f"{getattr(torchdata, '__version__', '?')}",
        f"tokenizer: {len(tokenizer)}-token BPE; corpus: {args.data or 'the generated sample corpus'}",
        f"command: python -m benchmarks.data_throughput {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(),
        "",
        "pipeline = datasets streaming jsonl read + batched tokenization + mixing + packing + collation, timed "
        "from the first batch on (worker start-up excluded); 'tokenizer alone' is the Rust encoder on the same "
        "texts with no pipeline around it. On a shared machine the numbers vary by up to 2x between runs: "
        "compare rows of one run.",
        "",
        "| what | where | tokens/s (median) | min - max |",
        "|---|---|---|---|",
    ]
    lines = [f"| {w} | {where} | {statistics.median(r):,.0f} | {min(r):,.0f} - {max(r):,.0f} |" for w, where, r in rows]
    table = "\n".join(head + lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
