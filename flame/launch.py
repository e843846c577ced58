"""Config queries for ``train.sh`` and the README's config reference.

    python -m flame.launch --world-size 8 --get job.dump_folder checkpoint.enable -- <flame.train args>

parses and validates the arguments exactly as ``python -m flame.train`` would (TOML +
``--section.key value`` overrides) for ``--world-size`` ranks and prints one value per
line (booleans as true/false, None as an empty line, lists comma-separated). A config
error prints the trainer's one-line message and exits 2, before any process is launched.

    python -m flame.launch --reference

prints every section and key of the JobConfig as Markdown tables (default and the first
sentence of the field's docstring), the config reference in README.md.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m flame.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--world-size", type=int, default=1, help="ranks the job will run on (for validation)")
    parser.add_argument("--get", nargs="+", default=[], help="dotted config keys to print, e.g. job.dump_folder")
    parser.add_argument("--reference", action="store_true", help="print the config reference (Markdown) and exit")
    args = parser.parse_args(own)
    if args.reference:
        print(config_reference())
        return 0
    if not args.get:
        parser.error("--get KEY [KEY ...] or --reference is required")

    from flame.config import ConfigError, FlameConfigManager

    try:
        config = FlameConfigManager().parse_args(train_args, world_size=args.world_size)
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
