"""flame.tools.plot_run: the run plot from metrics.jsonl or TensorBoard events, as a function and as a command.

matplotlib and tensorboard are dev dependencies (imported here: missing means failing, never skipping).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib  # noqa: F401 - dev dependency of plot_run
import pytest

from flame.tools import plot_run as plot

ROOT = Path(__file__).resolve().parents[2]


def _metrics_row(step: int, loss: float) -> dict:
    return {
        "step": step,
        "loss/avg": loss,
        "loss/max": loss + 0.1,
        "grad_norm": 1.0 / step,
        "lr": 1e-3 * min(step, 5) / 5,
        "throughput/tokens_per_sec_per_device": 1000.0 + step,
        "memory/peak_active_gib": 0.5,
        "memory/peak_reserved_gib": 0.6,
        "tokens_seen": 256.0 * step,
    }


EXPECTED_PANELS = {
    "loss": ["loss/avg", "loss/max"],
    "learning rate": ["lr"],
    "gradient norm": ["grad_norm"],
    "throughput": ["throughput/tokens_per_sec_per_device"],
    "memory": ["memory/peak_active_gib", "memory/peak_reserved_gib"],
    "MFU": [],  # a CPU run logs no MFU: the panel says "not logged"
}


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (800, 1500) and float(pixels[..., :3].std()) > 0.05, "a blank picture"


def test_plot_run_from_metrics_jsonl(tmp_path):
    rows = [_metrics_row(s, 8.0 - s / 4) for s in range(1, 11)]
    rows += [{**_metrics_row(s, 1.0), "loss/avg": 1.0} for s in (9, 10)]  # a resume re-logs steps 9 and 10
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "loss/a'  # killed mid-write
    (tmp_path / "metrics.jsonl").write_text(text)

    series = plot.read_jsonl(tmp_path / "metrics.jsonl")
    steps, losses = series["loss/avg"]
    assert steps == list(range(1, 11)) and losses[-2:] == [1.0, 1.0] and losses[0] == 7.75

    drawn = plot.plot_run(tmp_path, tmp_path / "run.png")
    assert drawn == EXPECTED_PANELS
    _check_png(tmp_path / "run.png")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not a JSON line"):
        plot.read_jsonl(tmp_path / "metrics.jsonl")


def test_plot_run_cli_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb" / "20260101-0000"))
    for step in range(1, 6):
        for key, value in _metrics_row(step, 5.0 - step / 2).items():
            if key != "step":
                writer.add_scalar(key, value, step)
    writer.close()
    assert plot.read_run(tmp_path)[0]["loss/avg"] == ([1, 2, 3, 4, 5], [4.5, 4.0, 3.5, 3.0, 2.5])
    proc = subprocess.run([sys.executable, "-m", "flame.tools.plot_run", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "loss: loss/avg, loss/max" in proc.stdout and "MFU: not logged" in proc.stdout
    _check_png(tmp_path / "metrics.png")
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl or TensorBoard event files"):
        plot.read_run(tmp_path / "tb" / "nothing")
