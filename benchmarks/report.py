"""Benchmark output: print a report and, when asked, write it to a file too."""

from __future__ import annotations

from pathlib import Path


def emit(text: str, out: str | None) -> None:
    """Print ``text`` (a markdown table or report) and write it to ``out`` when given."""
    print(text)
    if out:
        Path(out).write_text(text)
