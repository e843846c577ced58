"""Config queries for ``train.sh`` and the README's config reference.

    python -m flame.launch --world-size 8 --get job.dump_folder checkpoint.enable -- <flame.train args>

parses and validates the arguments exactly as ``python -m flame.train`` would (TOML +
``--section.key value`` overrides) for ``--world-size`` ranks and prints one value per
line (booleans as true/false, None as an empty line, lists comma-separated). A config
error prints the trainer's one-line message and exits 2, before any process is launched.

    python -m flame.launch --reference

prints every section and key of the JobConfig as Markdown tables (default and the first
sentence of the field's docstring), the config reference in README.md.

    python -m flame.launch --get KEY ... --check -- <flame.train args>

also checks, before any process is launched, what needs no process group: the model config
(a file or hub id), that tensor parallelism divides it, the tokenizer and the dataset.

    python -m flame.launch --run [--parent-pid PID] [--checkpoint-folder DIR] -- <torchrun args>

runs torchrun in this process (what ``train.sh`` does): it dies with its parent (SIGTERM
on Linux: torchrun then stops its workers, which die with it in turn); SIGINT / SIGTERM /
SIGHUP stop the job with one line naming the newest complete checkpoint (exit 128 +
signal); a failed worker ends the output with its one-line error (exit 2 for bad input,
1 otherwise) instead of torchrun's ChildFailedError report.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import logging
import os
import re
import signal
import sys
import textwrap
from typing import Any


def get_value(config: Any, key: str) -> Any:
    """``config.<section>.<key>`` for a dotted ``key``; KeyError naming the key if it does not exist."""
    obj = config
    for part in key.split("."):
        if not hasattr(obj, part):
            raise KeyError(f"no config key {key!r}")
        obj = getattr(obj, part)
    return obj


def show(value: Any) -> str:
    """``value`` as one shell-friendly line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(show(v) for v in value)
    return str(value).replace("\n", " ")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring (the string literal after the field), over the dataclass MRO."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError):
            continue
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of ``text``, cut at ``limit`` characters, safe inside a Markdown table cell."""
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    if len(sentence) > limit:
        sentence = sentence[: limit - 3].rstrip() + "..."
    return sentence.replace("``", "`").replace("|", "\\|")


# Fields whose dataclass has no docstring for them (torchtitan's beta1; flame.data's pin_memory).
_MISSING_DOCS = {
    "optimizer.beta1": "Adam's first-moment decay (beta2: second moment).",
    "data.pin_memory": "Pin the host memory of batches (faster host-to-GPU copies).",
}


def config_reference() -> str:
    """Markdown: one table per JobConfig section with every key, its default and its meaning."""
    from flame.config import JobConfig

    root = JobConfig()
    out = []
    for section in dataclasses.fields(JobConfig):
        obj = getattr(root, section.name)
        docs = field_docs(type(obj))
        out += [f"**[{section.name}]**", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            default = '""' if value == "" else show(value) or "none"
            meaning = first_sentence(docs.get(f.name) or _MISSING_DOCS.get(f"{section.name}.{f.name}", ""))
            out.append(f"| `{section.name}.{f.name}` | `{default}` | {meaning} |")
        out.append("")
    return "\n".join(out)


def preflight(config: Any) -> None:
    """The trainer's checks that need no process group (ConfigError): model config, TP, tokenizer, dataset."""
    from flame.model import load_model_config
    from flame.parallelize import check_tp_supported
    from flame.train import build_data

    model_config = load_model_config(config)
    check_tp_supported(model_config, config.parallelism.tensor_parallel_degree)
    build_data(config, 0, 1, getattr(model_config, "vocab_size", None))


def newest_checkpoint(folder: str) -> str | None:
    """The newest complete ``step-N`` folder in ``folder``, if any."""
    from flame.checkpoint_folders import is_complete, step_folders

    complete = [(step, path) for step, path in step_folders(folder).items() if is_complete(path)]
    return max(complete)[1] if complete else None


def _log_dir(torchrun_args: list[str]) -> str | None:
    for i, arg in enumerate(torchrun_args):
        if arg in ("--log-dir", "--log_dir") and i + 1 < len(torchrun_args):
            return torchrun_args[i + 1]
        if arg.startswith(("--log-dir=", "--log_dir=")):
            return arg.split("=", 1)[1]
    return None


def cause_of_failure(failures: dict[int, Any]) -> tuple[int, Any]:
    """The failure that ended a torchrun job: ``(rank, ProcessFailure)`` from ``ChildFailedError.failures``.

    torchrun's own ``get_first_failure`` takes the smallest timestamp, but timestamps are whole
    seconds and a worker that torchrun killed (a signal, no reply file) is stamped when torchrun
    records it: in the same second as the worker whose error made torchrun kill it, it can win the
    tie and hide the real error. So: workers that exited on their own come before killed ones, then
    the earliest, then a config error (exit 2: the cause) before another error in the same second
    (often the peer's lost connection when the erring rank left).
    """

    def order(item: tuple[int, Any]) -> tuple[bool, int, bool, int]:
        rank, failure = item
        return (failure.exitcode < 0, failure.timestamp, failure.exitcode != 2, rank)

    return min(failures.items(), key=order)


def run_torchrun(torchrun_args: list[str], parent_pid: int | None = None, checkpoint_folder: str = "") -> int:
    """torchrun ``torchrun_args`` in this process, tied to ``parent_pid``; one-line outcomes (see the module doc)."""
    from flame.process_tree import LAUNCHER_PID, die_with_parent

    die_with_parent(signal.SIGTERM, parent_pid)
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the workers' parent: they die with this process
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun would register its own handler for these in every start; ours keeps the first signal only.
    os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGUSR2"
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1:  # later ones would interrupt torchrun while it stops the workers
            raise SignalException(f"got {signal.Signals(signum).name}", sigval=signal.Signals(signum))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for name in list(logging.root.manager.loggerDict):  # its warnings and failure report: we say it in one line
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun.run(torchrun.parse_args(torchrun_args))
    except SignalException as stop:
        newest = newest_checkpoint(checkpoint_folder) if checkpoint_folder else None
        where = f"the newest complete checkpoint is {newest}" if newest else "no complete checkpoint yet"
        print(f"train.sh: stopped by {stop.sigval.name}; {where} (the same command resumes)", file=sys.stderr)
        return 128 + int(stop.sigval)
    except ChildFailedError as err:
        rank, failure = cause_of_failure(err.failures)
        message = failure.message if isinstance(failure.message, str) else failure.message.get("message", "")
        if failure.exitcode < 0:
            what = f"killed by {failure.signal_name()}"
        else:
            what = f"exit code {failure.exitcode}"
        if not message.startswith("flame: "):
            logs = _log_dir(torchrun_args)
            where = f"; its output is in {logs}" if logs else ""
            print(f"train.sh: rank {rank} failed ({what}){where}", file=sys.stderr)
            return 1
        print(message, file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m flame.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--world-size", type=int, default=1, help="ranks the job will run on (for validation)")
    parser.add_argument("--get", nargs="+", default=[], help="dotted config keys to print, e.g. job.dump_folder")
    parser.add_argument("--reference", action="store_true", help="print the config reference (Markdown) and exit")
    parser.add_argument("--check", action="store_true", help="with --get: also check model, TP, tokenizer, data")
    parser.add_argument("--run", action="store_true", help="run torchrun with the arguments after --")
    parser.add_argument("--parent-pid", type=int, default=None, help="with --run: die with this process")
    parser.add_argument("--checkpoint-folder", default="", help="with --run: named when the job is stopped")
    args = parser.parse_args(own)
    if args.reference:
        print(config_reference())
        return 0
    if args.run:
        return run_torchrun(train_args, args.parent_pid, args.checkpoint_folder)
    if not args.get:
        parser.error("--get KEY [KEY ...] or --reference is required")

    from flame.config import ConfigError, FlameConfigManager

    try:
        config = FlameConfigManager().parse_args(train_args, world_size=args.world_size)
        if args.check:
            preflight(config)
    except ConfigError as err:
        print(f"flame: config error: {err}", file=sys.stderr)
        return 2
    try:
        lines = [show(get_value(config, key)) for key in args.get]
    except KeyError as err:
        print(f"flame.launch: {err.args[0]}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
