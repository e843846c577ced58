"""GLA / RetNet / DeltaNet / Gated DeltaNet checkpoints saved by flash-linear-attention 0.6.0 load here (keys, logits).

Needs fla 0.6.0 in its own directory ``FLA060_PATH`` (default ``/tmp/fla060``), e.g.
``pip install --no-deps --target DIR fla-core==0.6.0 flash-linear-attention==0.6.0``. Each side runs
in its own process (both packages are named ``fla``; see fla060_linear_compat.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("fla060_linear_compat.py")
FLA060_PATH = os.environ.get("FLA060_PATH", "/tmp/fla060")


def _run(args, pythonpath, cwd):
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )


def _check(tmp_path, require_logits: bool):
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        pytest.fail(
            f"FLA060_PATH={FLA060_PATH} holds no fla 0.6.0: pip install --no-deps --target DIR "
            "fla-core==0.6.0 flash-linear-attention==0.6.0 and export FLA060_PATH=DIR"
        )
    out = tmp_path / "ckpt"
    saved = _run(["save", str(out)], FLA060_PATH, tmp_path)
    assert saved.returncode == 0, f"fla 0.6.0 side failed:\n{saved.stdout}\n{saved.stderr[-4000:]}"
    loaded = _run(["load", str(out), *(["--require-logits"] if require_logits else [])], str(ROOT), tmp_path)
    print(loaded.stdout)
    assert loaded.returncode == 0, f"loading fla 0.6.0 checkpoints failed:\n{loaded.stdout}\n{loaded.stderr[-4000:]}"


@pytest.mark.slow  # ~4.5 min: fla 0.6.0's kernels in the Triton interpreter
def test_fla060_checkpoints_load_with_same_logits_on_cpu(tmp_path):
    """On CPU: keys, shapes, loading and logits, fla 0.6.0 running in the Triton interpreter (decode-length inputs)."""
    if torch.cuda.is_available():
        pytest.skip("CUDA present: test_fla060_checkpoints_load_with_same_logits runs the full-length check")
    _check(tmp_path, require_logits=True)


@pytest.mark.gpu
def test_fla060_checkpoints_load_with_same_logits(tmp_path):
    _check(tmp_path, require_logits=True)
