"""Context parallelism of the chunk ops, short convolutions, layers and models: CP = 2 and 4 gloo ranks against the
whole sequences (tests/fla/context_parallel/cp_worker.py, one torchrun launch of 4 processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.harness import child_pythonpath

WORKER = os.path.join(os.path.dirname(__file__), "cp_worker.py")
OPS = ("gla", "simple_gla", "retention", "delta_rule", "gated_delta_rule", "kda", "dplr", "selective_scan",
       "hgrn", "linear_attn_norm", "gsa", "abc", "lightnet", "conv")  # fmt: skip
LAYERS = ("GatedLinearAttention", "MultiScaleRetention", "DeltaNet", "GatedDeltaNet", "KimiDeltaAttention",
          "LinearAttention", "BasedLinearAttention", "ReBasedLinearAttention", "GatedSlotAttention",
          "MesaNet", "ABCAttention", "LightNetAttention", "RodimusAttention", "HGRNAttention",
          "HGRN2Attention", "Mamba", "Mamba2", "GatedDeltaProduct", "Attention", "AttentionWindow",
          "MultiheadLatentAttention", "MultiheadLatentAttentionWindow", "NativeSparseAttention",
          "PaTHAttention", "PaTHAttentionNoGate", "ForgettingAttention", "ForgettingAttentionWindow")  # fmt: skip
MODELS = ("gla", "retnet", "delta_net", "gated_deltanet", "kda", "comba", "gated_deltaproduct", "hgrn",
          "hgrn2", "rwkv6", "rwkv7", "mamba", "mamba2", "samba", "mla", "linear_attn_norm", "gsa", "lightnet",
          "rodimus", "abc", "mesa_net", "nsa", "path_attn", "forgetting_transformer", "transformer",
          "gla_hybrid")  # fmt: skip
LAYOUTS = ("dense", "packed", "packed_cut")


@pytest.fixture(scope="module")
def cp_results(tmp_path_factory) -> dict:
    from tests.flame.test_train import ROOT, free_port

    out = tmp_path_factory.mktemp("cp") / "results.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    proc = subprocess.run([*cmd, WORKER, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.xdist_group("cp_ops")  # one worker: the torchrun launch runs once
@pytest.mark.parametrize("cp", [2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
def test_context_parallel_matches_whole_sequences(op, layout, cp, cp_results):
    """Outputs, final states and every input's gradient (gates included) of this rank's slice against the same op
    on the whole sequences, float32 on CPU: only sums in another order differ (~1e-6); a state not passed, or
    passed to the wrong rank or document, is O(0.1) or more. Packed layouts have documents crossing rank
    boundaries, passing through a whole rank, of length 1, and one boundary on a rank boundary."""
    result = cp_results[f"{op}/{layout}/cp{cp}"]
    assert not isinstance(result, dict), result["error"]
    assert result < 1e-5, result


@pytest.mark.xdist_group("cp_ops")
@pytest.mark.parametrize("cp", [2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("layer", LAYERS)
def test_context_parallel_layer_matches_whole_sequences(layer, layout, cp, cp_results):
    """The layer (short convolutions on) with ``cp_context`` on this rank's slice against the whole sequences: its
    output, the input's gradient and every parameter's (summed over the ranks); RetNet's rotary positions go on
    from the earlier ranks."""
    result = cp_results[f"{layer}/{layout}/cp{cp}"]
    assert not isinstance(result, dict), result["error"]
    assert result < 1e-5, result


@pytest.mark.xdist_group("cp_ops")
@pytest.mark.parametrize("layer", LAYERS)
def test_context_parallel_layer_in_bfloat16(layer, cp_results):
    """The layer case in bfloat16 (parameters and inputs; CP = 2, packed documents): every CP path takes the dtypes
    of training (float32 states and gathers beside bfloat16 activations). Both sides round to bfloat16: 8.8e-3 at
    most measured (MesaNet), while a state not passed is O(0.1)."""
    result = cp_results[f"bf16_{layer}/packed/cp2"]
    assert not isinstance(result, dict), result["error"]
    assert result < 3e-2, result


@pytest.mark.xdist_group("cp_ops")
@pytest.mark.parametrize("cp", [2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model", MODELS)
def test_context_parallel_model_matches_whole_sequences(model, layout, cp, cp_results):
    """The tiny config's causal LM with ``cp_context``: logits of this rank's tokens and every parameter's
    gradient (summed over the ranks) against the whole sequences. A decay parameter's gradient sums many terms of
    both signs over every token (Mamba2's ``A_log``: 1.1e-5 measured), hence 3e-5."""
    result = cp_results[f"model_{model}/{layout}/cp{cp}"]
    assert not isinstance(result, dict), result["error"]
    assert result < 3e-5, result


@pytest.mark.xdist_group("cp_ops")
@pytest.mark.parametrize("cp", [2, 4])
def test_context_parallel_bad_input(cp, cp_results):
    """Uneven splits, bad ``cu_seqlens``, an initial state, a slice of the wrong length, a halo wider than the
    slice, a padding mask, and models with a layer that cannot run split: each a ValueError naming it."""
    result = cp_results[f"errors/cp{cp}"]
    assert not isinstance(result, dict), result["error"]


@pytest.mark.gpu
@pytest.mark.parametrize("part", ["ops", "layers", "models"])
def test_context_parallel_on_cuda(part, tmp_path):
    """CP = 2 on CUDA tensors: 2 ranks on the one GPU (gloo gathers CUDA tensors through the host), every op on its
    Triton kernels (float32), the layers and the tiny models, against the whole sequences on the same GPU. One
    torchrun per part, so a part that fails or runs long leaves the others' results."""
    from tests.flame.test_train import ROOT, free_port

    names = {"ops": OPS, "layers": LAYERS, "models": [f"model_{m}" for m in MODELS]}[part]
    only = "^(" + "|".join(re.escape(n) for n in names) + ")/"
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath(), "CP_WORKER_DEVICE": "cuda",
           "CP_WORKER_ONLY": only}  # fmt: skip
    proc = subprocess.run([*cmd, WORKER, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(out.read_text())
    assert len(results) == 3 * len(names), sorted(results)
    bad = {k: v for k, v in results.items() if not isinstance(v, float) or v > 1e-4}
    assert not bad, bad
