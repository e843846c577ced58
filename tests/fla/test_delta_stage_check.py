"""scripts/gpu/delta_stage_check.py (the GPU diagnostic of the delta rule's backward stages) runs on CPU under the
interpreter and reports what it should: every stage finite, repeated runs bit-identical, dq / dk on its float32
evaluation of the formula."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness import child_pythonpath

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "delta_stage_check.py"


def test_delta_stage_check_runs_on_cpu():
    args = ["--device", "cpu", "--dtype", "float32", "--B", "1", "--T", "32", "--H", "1", "--K", "16", "--V", "32"]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": child_pythonpath()}
    done = subprocess.run([sys.executable, str(SCRIPT), *args, "--reps", "2"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "non-finite: o 0, Tm 0, w 0, u 0, h 0, v_new 0, dv_local 0, dh 0, dv_new 0" in out, out
    assert "run again, same bits: h True, v_new True, dh True, dv_new True" in out, out
    dqkwg = [line for line in out.splitlines() if line.startswith("chunk_bwd_dqkwg")]
    wy = [line for line in out.splitlines() if line.startswith("chunk_delta_wy_bwd")]
    assert dqkwg and wy, out
    for line in dqkwg:
        errors = [float(x) for x in re.findall(r"d[qk] ([0-9.e+-]+)", line)]
        assert len(errors) == 2 and all(e < 1e-5 for e in errors), line  # all(): a NaN fails (max may drop it)
        assert "non-finite dk [0, 0]" in line and "runs agree True" in line, line
    for line in wy:
        assert "non-finite dk [0, 0] dv 0 dbeta 0 dg 0 | runs agree True" in line, line
