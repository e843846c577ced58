"""Run every ``benchmarks/modules/bench_*.py`` and print/write one markdown table.

python -m benchmarks.modules.run_all [--out modules.md]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform

import torch

import benchmarks.modules as pkg
from benchmarks.report import emit

COLUMNS = ("module", "shape", "dtype", "impl", "fwd_ms", "fwdbwd_ms", "peak_mib")


def collect(only: list[str] | None = None) -> list[dict]:
    rows = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("bench_") or (only and info.name[6:] not in only):
            continue
        module = importlib.import_module(f"benchmarks.modules.{info.name}")
        rows.extend(module.rows())
    return rows


def to_markdown(rows: list[dict]) -> str:
    import triton

    head = (
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
        f"python {platform.python_version()}\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    parser.add_argument("--only", nargs="*", default=None, help="bench names, e.g. norm conv")
    args = parser.parse_args()
    table = to_markdown(collect(args.only))
    emit(table, args.out)


if __name__ == "__main__":
    main()
