"""Context parallel in the trainer (``parallelism.context_parallel_degree``), CPU with gloo: real torchrun launches of
a tiny GLA with short convolutions on the counting stream of tests/flame/dist/train_synthetic.py.

The same global batch per step whatever the layout, so a run split over CP ranks must match one rank: same first
loss, same losses and gradient norms after (fp32: only sums in another order differ)."""

from __future__ import annotations

import json

import pytest

from flame.config import ConfigError
from flame.context_parallel import check_cp_supported
from flame.model import load_model_config
from tests.flame.test_config import parse
from tests.flame.test_train import COMMON, ROOT, launch

pytestmark = pytest.mark.xdist_group("cp_runs")


@pytest.fixture(scope="module")
def gla_conv(tmp_path_factory) -> str:
    """configs/gla_cpu.json with its short convolutions on (the halo between ranks is exercised too)."""
    fields = json.loads((ROOT / "configs" / "gla_cpu.json").read_text())
    path = tmp_path_factory.mktemp("cfg") / "gla_conv.json"
    path.write_text(json.dumps({**fields, "use_short_conv": True}))
    return str(path)


def train(nproc: int, args: list[str], dump) -> list[dict]:
    proc, rows = launch(nproc, COMMON + args, dump)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return rows


def same_run(ref: list[dict], got: list[dict], rel: float = 2e-5) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    assert got[0]["loss/avg"] == pytest.approx(ref[0]["loss/avg"], rel=1e-6), "initial weights or batch differ"
    for r, g in zip(ref, got):
        assert g["loss/avg"] == pytest.approx(r["loss/avg"], rel=rel), f"step {r['step']}: loss"
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=rel), f"step {r['step']}: grad norm"
        assert g["tokens_seen"] == r["tokens_seen"]


def test_fsdp_x_context_parallel_matches_one_rank(gla_conv, tmp_path):
    """FSDP 2 x CP 2 (4 ranks, FSDP shards over both) against one rank: dense rows, every row split in two."""
    model = ["--model.config", gla_conv]
    ref = train(1, model + ["--training.gradient_accumulation_steps", "4"], tmp_path / "one")
    cp = ["--training.gradient_accumulation_steps", "2", "--parallelism.context_parallel_degree", "2"]
    got = train(4, model + cp, tmp_path / "cp")
    same_run(ref, got)
    assert got[-1]["loss/avg"] < got[0]["loss/avg"] - 0.5


@pytest.mark.slow
def test_context_parallel_4_with_packed_documents_matches_one_rank(gla_conv, tmp_path):
    """CP 4 on packed rows (varlen): two documents per row, one crossing the first and the third rank boundary.
    Three state hand-overs sum in another order than one rank's walk: 2.0e-5 on a gradient norm after two Adam
    steps (measured), hence 1e-4; a state not handed over is an O(0.1) error (tests/fla/context_parallel)."""
    args = ["--model.config", gla_conv, "--training.varlen", "true", "--training.batch_size", "1",
            "--training.gradient_accumulation_steps", "8"]  # fmt: skip
    ref = train(1, args, tmp_path / "one")
    got = train(4, args + ["--parallelism.context_parallel_degree", "4"], tmp_path / "cp")
    same_run(ref, got, rel=1e-4)


def test_models_that_cannot_be_split_are_refused_before_training():
    """A model with a layer that does not carry its state over ranks: one ConfigError naming the layer."""
    job = parse(["--model.config", str(ROOT / "configs" / "mom_tiny.json"),
                 "--parallelism.context_parallel_degree", "2"], world_size=2)  # fmt: skip
    with pytest.raises(ConfigError, match=r"context_parallel_degree = 2: .*layer 0 \(MomAttention\)"):
        check_cp_supported(load_model_config(job), 2)
    for ok in ("gla_cpu.json", "transformer_cpu.json", "gsa_cpu.json", "nsa_cpu.json", "path_attn_cpu.json",
               "mamba_tiny.json", "mesa_net_tiny.json"):  # fmt: skip
        check_cp_supported(load_model_config(parse(["--model.config", str(ROOT / "configs" / ok)])), 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--parallelism.tensor_parallel_degree", "2", "--training.gradient_accumulation_steps", "4"],
        ["--parallelism.data_parallel_replicate_degree", "2", "--training.gradient_accumulation_steps", "2"],
        ["--activation_checkpoint.mode", "full", "--training.gradient_accumulation_steps", "2"],
    ],
    ids=["TP 2 x CP 2", "HSDP 2 x CP 2", "FSDP 2 x CP 2 + full AC"],
)
def test_context_parallel_with_tensor_parallel_or_hsdp_matches_one_rank(gla_conv, extra, tmp_path):
    """CP 2 combined with TP 2 (heads split, each TP rank's states handed over its CP group), with HSDP (2
    replicas, each sharded over its CP pair) or with full activation checkpointing (the recomputed forward gathers
    again, in the same order on every rank) on 4 ranks against one rank."""
    model = ["--model.config", gla_conv]
    ref = train(1, model + ["--training.gradient_accumulation_steps", "4"], tmp_path / "one")
    got = train(4, model + extra + ["--parallelism.context_parallel_degree", "2"], tmp_path / "cp")
    same_run(ref, got)
