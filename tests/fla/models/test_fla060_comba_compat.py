"""Comba / Gated DeltaProduct checkpoints saved by flash-linear-attention 0.6.0 load here (keys, logits).

Needs fla 0.6.0 in its own directory ``FLA060_PATH`` (default ``/tmp/fla060``); each side runs in its own process
(see fla060_comba_compat.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("fla060_comba_compat.py")
FLA060_PATH = os.environ.get("FLA060_PATH", "/tmp/fla060")


def _run(args, pythonpath, cwd):
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=2400
    )


@pytest.mark.slow  # ~15 min on CPU: fla 0.6.0's kernels in the Triton interpreter
def test_fla060_comba_checkpoints_load_with_same_logits(tmp_path):
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0 (pip install --no-deps --target DIR ...)")
    out = tmp_path / "ckpt"
    saved = _run(["save", str(out)], FLA060_PATH, tmp_path)
    assert saved.returncode == 0, f"fla 0.6.0 side failed:\n{saved.stdout}\n{saved.stderr[-4000:]}"
    loaded = _run(["load", str(out), "--require-logits"], str(ROOT), tmp_path)
    print(loaded.stdout)
    assert loaded.returncode == 0, f"loading fla 0.6.0 checkpoints failed:\n{loaded.stdout}\n{loaded.stderr[-4000:]}"
