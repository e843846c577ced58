"""bench_chunk's command line (its timing needs CUDA; what runs before that is checked here)."""

import subprocess
import sys
from pathlib import Path

from benchmarks.ops import bench_chunk

ROOT = Path(__file__).resolve().parents[2]


def test_skip_ours_needs_the_fla_column():
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.ops.bench_chunk", "--skip-ours"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and "--skip-ours needs --fla-path" in run.stderr, run.stderr


def test_warm_pass_without_ours_or_fla_starts_no_worker(monkeypatch):
    started = []
    done = subprocess.CompletedProcess([], 0, "", "")
    monkeypatch.setattr(bench_chunk.subprocess, "run", lambda *a, **k: started.append(a) or done)
    bench_chunk.warm_caches(None, [64], ["chunk_gla"], jobs=2, ours=False)
    assert started == []
    bench_chunk.warm_caches("/nonexistent", [64], ["chunk_gla"], jobs=1, ours=False)
    assert [a[0][a[0].index("--worker") + 1] for a in started] == ["fla"]
