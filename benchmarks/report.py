"""Benchmark output: print a report and, when asked, write it to a file too; keep what a time limit cut short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path


def emit(text: str, out: str | None) -> None:
    """Print ``text`` (a markdown table or report) and write it to ``out`` when given."""
    print(text)
    if out:
        Path(out).write_text(text)


class CutShort(Exception):
    """Raised inside :func:`stop_on_sigterm` when SIGTERM arrives."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (what ``timeout`` sends at its limit) into :class:`CutShort` inside the block, so that a
    benchmark can still write the rows it measured before the limit; the previous handler comes back after."""

    def stop(signum, frame):
        raise CutShort(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
