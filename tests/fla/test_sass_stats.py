"""scripts/sass_stats.py compiles a kernel variant for sm_90 without a GPU and reads its SASS: the selective scan's
carry kernel, whose walk over the chunks is its one loop, shows its exponentials, loads and store there."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness import child_pythonpath


def test_sass_stats_reports_registers_and_the_loop_mix():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = child_pythonpath()
    args = ["--warps", "4", "--const", "Di=1536", "Ds=16", "BT=16", "BD=32", "BS=16", "REVERSE=False",
            "SOFTPLUS=True", "USE_INITIAL=True", "STORE_FINAL=True", "HAS_BIAS=True", "IS_VARLEN=False",
            "--none", "cu_seqlens", "chunk_offsets", "--type", "T=i32", "At=*fp32", "h_in=*fp32", "local=*fp32",
            "dt_sum=*fp32", "h0=*fp32", "ht=*fp32", "dt_bias=*fp32"]  # fmt: skip
    run = subprocess.run([sys.executable, "scripts/sass_stats.py", "fla.ops.mamba.scan:mamba_chunk_carry_kernel",
                          *args], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("REG:") and "STACK:0" in lines[0], lines[0]
    loops = [line for line in lines if line.startswith("loop ")]
    assert len(loops) == 1, run.stdout
    counts = dict(item.rsplit(" ", 1) for item in loops[0].split("; ")[1].split(", "))
    # one chunk a step: a [16, 32] state tile over 128 threads, 4 values each: 4 exponentials, and the chunk's loads
    # (its local tile and sum-dt row) and the carried state's store
    assert int(counts["MUFU"]) == 4 and int(counts["LDG"]) >= 2 and int(counts["STG"]) >= 1, loops[0]
