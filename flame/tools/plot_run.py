"""PNG of a training run: loss, learning rate, gradient norm, tokens/s, memory and MFU vs step.

    python -m flame.tools.plot_run <dump_folder> [--out run.png]

Reads ``<dump_folder>/metrics.jsonl`` (what ``flame.train`` writes with ``metrics.enable_jsonl``; a
resumed run appends, and the last line of a step wins), else ``metrics_rank_0.jsonl``, else the
TensorBoard event files under the folder (needs ``tensorboard``). The default output is
``<dump_folder>/metrics.png``. Needs matplotlib (``pip install 'flame[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (panel title, y label, metric keys as flame.metrics logs them)
PANELS = (
    ("loss", "nats / token", ("loss/avg", "loss/max")),
    ("learning rate", "lr", ("lr",)),
    ("gradient norm", "norm (before clipping)", ("grad_norm",)),
    ("throughput", "tokens / s / device", ("throughput/tokens_per_sec_per_device",)),
    ("memory", "GiB", ("memory/peak_active_gib", "memory/peak_reserved_gib")),
    ("MFU", "%", ("throughput/mfu_pct",)),
)

Series = dict[str, tuple[list[int], list[float]]]


def read_jsonl(path: Path) -> Series:
    """``{key: (steps, values)}`` from a metrics.jsonl; a step logged twice (resume) keeps its last line."""
    by_step: dict[int, dict] = {}
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):  # a run killed mid-write leaves a partial last line
                break
            raise ValueError(f"{path}:{n}: not a JSON line") from None
        by_step[int(row["step"])] = row
    series: Series = {}
    for step in sorted(by_step):
        for key, value in by_step[step].items():
            if key != "step" and isinstance(value, (int, float)):
                steps, values = series.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    return series


def read_tensorboard(folder: Path) -> Series:
    """``{tag: (steps, values)}`` from every TensorBoard event file under ``folder`` (later files win per step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for event_file in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                merged.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: (sorted(v), [v[s] for s in sorted(v)]) for tag, v in merged.items()}


def read_run(dump: Path) -> tuple[Series, Path]:
    """The run's metric series and the file or folder they came from."""
    for name in ("metrics.jsonl", "metrics_rank_0.jsonl"):
        if (dump / name).is_file():
            return read_jsonl(dump / name), dump / name
    if any(dump.rglob("events.out.tfevents.*")):
        try:
            return read_tensorboard(dump), dump
        except ImportError as err:
            raise SystemExit(f"{dump} has only TensorBoard logs and tensorboard is not installed ({err})") from None
    raise FileNotFoundError(f"no metrics.jsonl or TensorBoard event files in {dump}")


def plot_run(dump: str | Path, out: str | Path | None = None) -> dict[str, list[str]]:
    """Write the PNG (default ``<dump>/metrics.png``); returns ``{panel title: [metric keys drawn]}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dump = Path(dump)
    series, source = read_run(dump)
    out = Path(out) if out else dump / "metrics.png"
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    drawn: dict[str, list[str]] = {}
    for ax, (title, ylabel, keys) in zip(axes.flat, PANELS):
        present = [k for k in keys if k in series]
        for key in present:
            steps, values = series[key]
            ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if present:
            ax.legend(fontsize=8)
            if title == "learning rate":
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        drawn[title] = present
    origin = source.name if source.is_file() else "TensorBoard events"
    fig.suptitle(f"{dump.name} ({origin})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: writes the PNG and prints which series each panel shows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump_folder", help="the run's job.dump_folder")
    parser.add_argument("--out", default=None, help="PNG path (default <dump_folder>/metrics.png)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.dump_folder) / "metrics.png"
    drawn = plot_run(args.dump_folder, out)
    print(f"wrote {out}: " + "; ".join(f"{t}: {', '.join(k) or 'not logged'}" for t, k in drawn.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
