"""Kernel launches as torch.compile traces them (``tests/fla/dynamo_trace_worker.py`` in a child process).

On an H100 (torch 2.11), flame could not compile FoX, NSA, Samba or Rodimus: the attention kernels are
``heuristics -> autotune(prune_configs_by=...) -> jit``, triton's ``Heuristics.run`` calls ``Autotuner.run``, and
torch 2.11's dynamo makes that call a kernel without a source, which the pruning needs ("Can't construct an
AttrSource without a valid base source"). :class:`fla.utils.launch.LeanKernel` now launches such kernels by
subscript under compile. The worker replays torch 2.11's handling of ``run`` on the installed torch.
``fused_recurrent_gated_delta_rule`` broke the graph ("Not a Python constant") while its autotuner's config
pruning made new ``triton.Config`` objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import child_pythonpath

WORKER = Path(__file__).with_name("dynamo_trace_worker.py")


def run_worker(*flags: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = child_pythonpath()
    proc = subprocess.run([sys.executable, str(WORKER), *flags], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line]
    return dict(lines)


@pytest.mark.parametrize("call_run", ["installed", "torch-2.11"])
def test_attention_kernels_trace_into_one_graph(call_run):
    """Forward and backward of parallel_attn (dense; window + forget gate) trace with no graph break: forward,
    delta, dq and dkv kernels (and the gate's cumsum both ways), also with torch 2.11's ``run``; so does the
    recurrent gated delta rule, without and with autograd, and the chunked DPLR op (RWKV7) with autograd, recomputing
    its forward in the backward or (``disable_recompute``) not. (Varlen checks cu_seqlens on the host, a graph break,
    so it has no one-graph case here.)"""
    out = run_worker(*(["--torch-2.11-call-run"] if call_run == "torch-2.11" else []))
    assert out == {
        "parallel_attn": "ok 4",
        "parallel_attn_window_gate": "ok 6",
        "fused_recurrent_gated_delta_rule": "ok 1",
        "fused_recurrent_gated_delta_rule_train": "ok 9",
        "chunk_rwkv7_train": "ok 6",
        "chunk_rwkv7_train_disable_recompute": "ok 4",
    }, out
