"""MoM checkpoints saved by flash-linear-attention 0.6.0 load here with the same keys, logits and loss (aux term
included); see fla060_mom_compat.py (fla 0.6.0's unstable routing sort is made stable on its side).

Needs fla 0.6.0 in its own directory ``FLA060_PATH`` (default ``/tmp/fla060``), e.g.
``pip install --no-deps --target DIR fla-core==0.6.0 flash-linear-attention==0.6.0``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("fla060_mom_compat.py")
FLA060_PATH = os.environ.get("FLA060_PATH", "/tmp/fla060")


def _run(args, pythonpath, cwd):
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )


def _check(tmp_path):
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(
            f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0: pip install --no-deps --target DIR "
            "fla-core==0.6.0 flash-linear-attention==0.6.0 and export FLA060_PATH=DIR"
        )
    out = tmp_path / "ckpt"
    saved = _run(["save", str(out)], FLA060_PATH, tmp_path)
    assert saved.returncode == 0, f"fla 0.6.0 side failed:\n{saved.stdout}\n{saved.stderr[-4000:]}"
    loaded = _run(["load", str(out)], str(ROOT), tmp_path)
    print(loaded.stdout)
    assert loaded.returncode == 0, f"loading fla 0.6.0 checkpoints failed:\n{loaded.stdout}\n{loaded.stderr[-4000:]}"


@pytest.mark.slow  # ~30 s: fla 0.6.0's kernels in the Triton interpreter
def test_fla060_mom_checkpoints_load_with_same_logits_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: test_fla060_mom_checkpoints_load_with_same_logits runs the full-length check")
    _check(tmp_path)


@pytest.mark.gpu
def test_fla060_mom_checkpoints_load_with_same_logits(tmp_path):
    _check(tmp_path)
