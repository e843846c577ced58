"""GPU: checkpoints saved by flash-linear-attention 0.6.0 load here with the same keys and logits.

Needs ``FLA060_PATH``: a directory holding fla 0.6.0, e.g.
``pip install --no-deps --target /opt/fla060 fla-core==0.6.0 flash-linear-attention==0.6.0``.
The two packages are both named ``fla``, so each side runs in its own process (see fla060_compat.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("fla060_compat.py")


def _run(args, pythonpath, cwd):
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )


@pytest.mark.gpu
def test_fla060_transformer_checkpoints_load_with_same_logits(tmp_path):
    fla060 = os.environ.get("FLA060_PATH")
    if not fla060:
        pytest.fail(
            "FLA060_PATH is not set: install flash-linear-attention 0.6.0 into its own directory "
            "(pip install --no-deps --target DIR fla-core==0.6.0 flash-linear-attention==0.6.0) "
            "and export FLA060_PATH=DIR"
        )
    if not (Path(fla060) / "fla" / "__init__.py").exists():
        pytest.fail(f"FLA060_PATH={fla060} holds no fla package (expected {fla060}/fla/__init__.py)")
    out = tmp_path / "ckpt"
    saved = _run(["save", str(out)], fla060, tmp_path)
    assert saved.returncode == 0, f"fla 0.6.0 side failed:\n{saved.stdout}\n{saved.stderr[-4000:]}"
    loaded = _run(["load", str(out), "--require-logits"], str(ROOT), tmp_path)
    print(loaded.stdout)
    assert loaded.returncode == 0, f"loading fla 0.6.0 checkpoints failed:\n{loaded.stdout}\n{loaded.stderr[-4000:]}"
