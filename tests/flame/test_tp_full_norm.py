"""TP norms over all heads (``TPRegion.full_norms``, ``split_inputs``): 2 gloo ranks == one unsplit module.

The worker (tests/flame/dist/tp_full_norm.py) checks outputs and gradients of
:func:`flame.parallelize.tp_rms_norm` against fla's norms, and of a toy region sharded with a gated full norm
and a split input; the model families using them (hgrn, hgrn2, lightnet) run the conformance TP check.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.flame.test_train import ROOT, free_port
from tests.harness import child_pythonpath

WORKER = ROOT / "tests" / "flame" / "dist" / "tp_full_norm.py"


def test_tp_full_norm_matches_unsplit_norm_two_ranks():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    proc = subprocess.run([*cmd, str(WORKER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "tp full norm: ok" in proc.stdout
