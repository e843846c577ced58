"""lm-evaluation-harness on fla models (``pip install 'flame[eval]'``).

    python -m flame.eval.harness --model <HF dir> --tasks hellaswag,arc_easy [--num-fewshot 0 \
        --batch-size 16 --device cuda --dtype bfloat16 --limit 100 --include-path my_tasks/ --output out.json]

:class:`FlaLM` is lm-eval's ``HFLM`` with ``import fla`` done first, so ``AutoModelForCausalLM``
knows fla's model types (its ``generate()`` then runs with an ``FLACache``). It is also
registered with lm-eval as ``fla``: after ``import flame.eval.harness``,
``lm_eval.simple_evaluate(model="fla", model_args="pretrained=<dir>", ...)`` works too.
"""

from __future__ import annotations

import argparse
import json
import sys

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as err:  # a missing optional dependency is an error, never a silent skip
    raise ImportError(f"flame.eval.harness needs lm-evaluation-harness ({err}): pip install 'flame[eval]'") from err


@register_model("fla")
class FlaLM(HFLM):
    """``HFLM`` for fla models: ``pretrained`` is an HF folder / hub id or a loaded ``PreTrainedModel``.

    Every other argument is ``HFLM``'s (``tokenizer`` defaults to the model folder, ``device``,
    ``dtype``, ``batch_size``, ``max_length``, ...). Causal backend always.
    """

    def __init__(self, pretrained, **kwargs):
        import fla  # noqa: F401 - registers fla's model types with AutoConfig / AutoModelForCausalLM

        kwargs.setdefault("backend", "causal")
        super().__init__(pretrained=pretrained, **kwargs)


def evaluate(
    model: str,
    tasks: list[str],
    *,
    tokenizer: str | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 1,
    device: str | None = None,
    dtype: str = "auto",
    limit: float | None = None,
    max_length: int | None = None,
    include_path: str | None = None,
    default_tasks: bool = True,
    seed: int = 1234,
) -> dict:
    """Run lm-eval's ``simple_evaluate`` for ``tasks`` on the fla model in ``model``; returns its results dict.

    ``include_path`` adds a folder of task YAML files; ``default_tasks=False`` indexes only those
    (lm-eval's own index of several thousand tasks takes seconds to build).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from fla.utils import default_device

    device = device or str(default_device())
    lm = FlaLM(model, tokenizer=tokenizer, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length)
    return simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=TaskManager(include_path=include_path, include_defaults=default_tasks),
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF model folder (config.json + weights) or hub id")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task (or group) names")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: --model)")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--batch-size", default="1", help="an integer or 'auto'")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16, float32")
    parser.add_argument("--limit", type=float, default=None, help="examples per task (or a fraction if < 1)")
    parser.add_argument("--max-length", type=int, default=None, help="context length (default: from the config)")
    parser.add_argument("--include-path", default=None, help="folder of extra task YAML files")
    parser.add_argument("--no-default-tasks", action="store_true", help="only the tasks under --include-path")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output", default=None, help="write the results JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints lm-eval's results table."""
    from lm_eval.utils import handle_non_serializable, make_table

    args = parse_args(argv)
    batch_size = args.batch_size if args.batch_size.startswith("auto") else int(args.batch_size)
    results = evaluate(
        args.model,
        [t.strip() for t in args.tasks.split(",") if t.strip()],
        tokenizer=args.tokenizer,
        num_fewshot=args.num_fewshot,
        batch_size=batch_size,
        device=args.device,
        dtype=args.dtype,
        limit=args.limit,
        max_length=args.max_length,
        include_path=args.include_path,
        default_tasks=not args.no_default_tasks,
        seed=args.seed,
    )
    print(make_table(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2, default=handle_non_serializable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
