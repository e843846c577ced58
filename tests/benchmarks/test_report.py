"""benchmarks/report.py: SIGTERM inside ``stop_on_sigterm`` becomes ``CutShort`` (a time-limited benchmark still
writes its rows), the previous handler comes back after; ``emit`` prints and writes."""

from __future__ import annotations

import os
import signal

import pytest

from benchmarks.report import CutShort, emit, stop_on_sigterm


def test_sigterm_inside_the_block_raises_cut_short_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    rows = []
    with pytest.raises(CutShort):
        with stop_on_sigterm():
            rows.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
            rows.append(2)  # not reached: the handler raised
    assert rows == [1]
    assert signal.getsignal(signal.SIGTERM) is before


def test_emit_prints_and_writes(tmp_path, capsys):
    out = tmp_path / "table.md"
    emit("| a |\n", str(out))
    assert out.read_text() == "| a |\n"
    assert "| a |" in capsys.readouterr().out


FAKE_WORKER = """
import json, sys, time
print("[bench_chunk] warm fla x: ok", file=sys.stderr, flush=True)
print("[bench_chunk] " + json.dumps({"op": "chunk_x", "impl": "fla", "T": 64, "fwd_ms": 0.5, "fwdbwd_ms": 1.5}),
      file=sys.stderr, flush=True)
time.sleep(float(sys.argv[sys.argv.index("--T") + 1]) / 1000)  # --T 30000: 30 s, only ended by the kill
print(json.dumps([]))
"""


def test_fla_rows_keep_the_worker_rows_measured_before_sigterm(tmp_path, monkeypatch):
    """bench_chunk's fla worker reports each row on stderr as JSON; a SIGTERM (``timeout``) while it runs keeps
    those rows, kills the worker and leaves the rest to the caller (which writes the table)."""
    import threading

    from benchmarks.ops import bench_chunk

    fake = tmp_path / "worker.py"
    fake.write_text(FAKE_WORKER)
    monkeypatch.setattr(bench_chunk, "__file__", str(fake))
    assert bench_chunk.fla_rows(str(tmp_path), [10]) == [
        {"op": "chunk_x", "impl": "fla", "T": 64, "fwd_ms": 0.5, "fwdbwd_ms": 1.5}
    ]
    rows = []
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(CutShort), stop_on_sigterm():
            bench_chunk.fla_rows(str(tmp_path), [30000], None, rows)
    finally:
        timer.cancel()
    assert [r["op"] for r in rows] == ["chunk_x"]
