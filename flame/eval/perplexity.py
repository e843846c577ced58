"""Perplexity of an HF-format model folder over any text source flame's data pipeline reads.

    python -m flame.eval.perplexity --model <HF dir> --dataset <path or hub name> \
        [--split validation --text-column text --seq-len 2048 --stride 1024 --max-tokens 1e6 --batch-size 8]

The documents of the source (``[bos] ids [eos]``, tokenized by :mod:`flame.data` exactly as in
training) are concatenated into one stream of ``N`` tokens, and every token but the first is
scored exactly once (the "perplexity of fixed-length models" method of the Hugging Face docs,
without its dropped tokens): window ``k`` is the ``seq_len`` tokens ending at ``e_k``, with
``e_0 = seq_len`` and ``e_k = e_{k-1} + stride``, and it scores the tokens ``[e_{k-1}, e_k)``.
Each scored token therefore sees at least ``seq_len - stride`` tokens of context (all earlier
tokens in the first window). ``stride = seq_len - 1`` (the default) gives non-overlapping
windows; a smaller stride gives more context per token at more compute.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from fla.utils import DTYPES, IGNORE_INDEX, default_device
from flame.data.config import SourceSpec


@dataclass
class PerplexityResult:
    """Mean negative log-likelihood (nats/token) over ``tokens`` scored tokens, and its exponent."""

    loss: float
    perplexity: float
    bits_per_token: float
    tokens: int
    windows: int
    seq_len: int
    stride: int


def load_model(path: str, device: str, dtype: str | torch.dtype | None = None):
    """``AutoModelForCausalLM.from_pretrained(path)`` after ``import fla`` (registers fla's models), in eval mode.

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU.
    """
    from transformers import AutoModelForCausalLM

    import fla  # noqa: F401 - registers fla's model types with the Auto classes

    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(device).eval()


def read_tokens(
    dataset: str,
    tokenizer,
    *,
    split: str = "train",
    text_column: str = "text",
    dataset_name: str | None = None,
    data_dir: str | None = None,
    data_files: str | None = None,
    max_tokens: int | None = None,
    add_bos: bool | None = None,
    add_eos: bool = True,
) -> torch.Tensor:
    """The documents of ``dataset`` as one token stream ``[N]`` (int64), at most ``max_tokens`` long.

    ``dataset`` is anything ``data.dataset`` of the trainer accepts (a local file or folder, a
    ``save_to_disk`` folder, a hub name); documents are read in order by one reader and
    tokenized by :class:`flame.data.TextEncoder` (BOS/EOS as in training).
    """
    from flame.data.sources import DocumentStream, SourceExhausted, open_source
    from flame.data.tokenize import TextEncoder

    spec = SourceSpec(dataset, dataset_name, split, data_dir, data_files, text_column, 1.0, True)
    stream = DocumentStream(
        open_source(spec, num_readers=1),
        spec,
        TextEncoder(tokenizer, add_bos=add_bos, add_eos=add_eos),
        reader=0,
        num_readers=1,
        batch_docs=64,
        repeat=False,
        who="flame.eval.perplexity",
    )
    docs, total = [], 0
    while max_tokens is None or total < max_tokens:
        try:
            doc = stream.next()
        except SourceExhausted:
            break
        docs.append(torch.from_numpy(doc))
        total += len(doc)
    if not docs:
        raise ValueError(f"data source '{dataset}' (split {split}) gave no tokens")
    tokens = torch.cat(docs)
    return tokens[:max_tokens] if max_tokens is not None else tokens


def windows(num_tokens: int, seq_len: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(start, first_target, end)`` per window: input tokens ``[start, end)``, scored ``[first_target, end)``.

    Every position in ``[1, num_tokens)`` is scored by exactly one window (see the module docstring).
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (a window of seq_len tokens predicts seq_len - 1), got {seq_len}")
    if not 1 <= stride <= seq_len - 1:
        raise ValueError(
            f"stride must be between 1 and seq_len - 1 = {seq_len - 1} (a window of {seq_len} tokens scores at "
            f"most {seq_len - 1}), got {stride}"
        )
    if num_tokens < 2:
        raise ValueError(f"need at least 2 tokens to score one, got {num_tokens}")
    prev, end = 1, min(seq_len, num_tokens)
    while True:
        yield max(end - seq_len, 0), prev, end
        if end == num_tokens:
            return
        prev, end = end, min(end + stride, num_tokens)


@torch.no_grad()
def perplexity(
    model, tokens: torch.Tensor, seq_len: int, stride: int | None = None, batch_size: int = 1
) -> PerplexityResult:
    """Perplexity of ``model`` on the token stream ``tokens [N]`` with sliding windows.

    Windows of ``seq_len`` tokens go through the model ``batch_size`` at a time (the first
    window is shorter only when ``N < seq_len``); the model's own loss with
    ``num_items_in_batch=1`` gives each batch's summed negative log-likelihood over its targets.
    """
    stride = seq_len - 1 if stride is None else stride
    device = next(model.parameters()).device
    spans = list(windows(len(tokens), seq_len, stride))
    nll, count = 0.0, 0
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]
        input_ids = torch.stack([tokens[s:e] for s, _, e in group]).to(device)
        labels = input_ids.clone()
        for row, (s, first, _) in enumerate(group):
            labels[row, : first - s] = IGNORE_INDEX  # context only: scored by an earlier window
        out = model(input_ids=input_ids, labels=labels, num_items_in_batch=1, use_cache=False)
        nll += float(out.loss.float())
        count += sum(e - first for _, first, e in group)
    loss = nll / count
    return PerplexityResult(loss, math.exp(loss), loss / math.log(2), count, len(spans), seq_len, stride)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF model folder (config.json + weights)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or hub name (default: --model)")
    parser.add_argument("--dataset", required=True, help="local file/folder or hub dataset name (as data.dataset)")
    parser.add_argument("--dataset-name", default=None, help="HF config name of the dataset")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--data-files", default=None)
    parser.add_argument("--split", default="validation", help="split (ignored for a single local file)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per window")
    parser.add_argument("--stride", type=int, default=None, help="new tokens scored per window (default seq_len-1)")
    parser.add_argument("--max-tokens", type=float, default=None, help="score only the first N tokens of the stream")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 on CUDA, else fp32")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints one JSON line with the result."""
    args = parse_args(argv)
    from flame.data import build_tokenizer

    tokenizer = build_tokenizer(args.tokenizer or args.model)
    max_tokens = int(args.max_tokens) if args.max_tokens is not None else None
    tokens = read_tokens(
        args.dataset,
        tokenizer,
        split=args.split,
        text_column=args.text_column,
        dataset_name=args.dataset_name,
        data_dir=args.data_dir,
        data_files=args.data_files,
        max_tokens=max_tokens,
    )
    model = load_model(args.model, args.device, args.dtype)
    vocab = model.config.vocab_size
    if int(tokens.max()) >= vocab:
        raise SystemExit(f"flame.eval.perplexity: token id {int(tokens.max())} >= the model's vocab_size {vocab}")
    result = perplexity(model, tokens, args.seq_len, args.stride, args.batch_size)
    record = {"model": args.model, "dataset": args.dataset, "split": args.split, **asdict(result)}
    line = json.dumps(record)
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
