"""Benchmark tools users run: benchmarks/generation.py, benchmarks/train_throughput.py, benchmarks/compile_breaks.py.

Each runs for real on CPU at tiny sizes so it cannot rot.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import generation

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- generation benchmark


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("tools")


@pytest.fixture(scope="module")
def gla_dir(tmp_path_factory):
    from fla.models import GLAConfig, GLAForCausalLM

    torch.manual_seed(0)
    config = GLAConfig(hidden_size=64, num_hidden_layers=2, num_heads=2, vocab_size=300, bos_token_id=1, eos_token_id=2)
    out = tmp_path_factory.mktemp("gla_tiny")
    GLAForCausalLM(config).save_pretrained(out)
    return out


def test_greedy_decode_is_generate(gla_dir):
    from flame.eval.perplexity import load_model

    model = load_model(str(gla_dir), "cpu")
    prompt = torch.randint(3, 300, (2, 9))
    tokens, prefill_s, decode_s, cache = generation.greedy_decode(model, prompt, 5, torch.device("cpu"))
    expected = model.generate(prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(tokens, expected[:, 9:]) and prefill_s > 0 and decode_s > 0
    assert cache.get_seq_length() == 9 + 4


def test_generation_benchmark_cpu(gla_dir, tmp_path):
    out, js = tmp_path / "gen.md", tmp_path / "gen.json"
    args = ["--model", str(gla_dir), "--compare-transformer", "--prompt-len", "24", "--gen-len", "4",
            "--batch-size", "2", "--repeats", "1", "--device", "cpu", "--out", str(out), "--json", str(js)]  # fmt: skip
    short = generation.main(args)
    long = generation.main([*args[:4], "48", *args[5:]])
    assert [r.model for r in short] == ["gla (" + gla_dir.name + ")", "transformer++ (random init, same size)"]
    for row in short + long:
        for key in ("prefill_tok_s", "decode_tok_s", "prefill_ms", "decode_ms_per_token", "peak_gib", "cache_mib"):
            value = getattr(row, key)
            assert math.isfinite(value) and value > 0, (row.model, key, value)
    # the GLA cache is a fixed-size state; the Transformer's KV cache grows with the prompt
    assert long[0].cache_mib == short[0].cache_mib and long[1].cache_mib > short[1].cache_mib
    table = out.read_text()
    assert "device: cpu" in table and "--compare-transformer" in table and "| decode_tok_s |" in table
    assert json.loads(js.read_text())[1]["model"].startswith("transformer++")


def test_generation_benchmark_from_a_config_json():
    rows = generation.main(["--model", str(ROOT / "configs" / "gla_cpu.json"), "--prompt-len", "8", "--gen-len", "2",
                            "--repeats", "1", "--device", "cpu"])  # fmt: skip
    assert [r.model for r in rows] == ["gla (gla_cpu)"] and rows[0].decode_tok_s > 0


def test_transformer_like_matches_the_size():
    from fla.models import GLAConfig

    gla = GLAConfig(hidden_size=128, num_hidden_layers=3, num_heads=4, vocab_size=1000, intermediate_size=320)
    cfg = generation.transformer_like(gla, min_positions=10_000)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size) == (128, 3, 1000, 320)
    assert cfg.num_heads == 2 and cfg.max_position_embeddings == 10_000 and cfg.model_type == "transformer"


# ----------------------------------------------------------------------------- training throughput benchmark


def test_train_throughput_cpu(tmp_path):
    """flame's Trainer step, the eager loop, and the eager loop of a peer ``fla`` in a subprocess (ours, linked)."""
    from transformers import AutoConfig

    import fla  # noqa: F401
    from flame.metrics import flops_per_token

    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "fla").symlink_to(ROOT / "fla")
    out, js = tmp_path / "train.md", tmp_path / "train.json"
    config = ROOT / "configs" / "gla_cpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--config", str(config),
           "--batch-size", "2", "--seq-len", "32", "--steps", "2", "--warmup", "1", "--fla-path", str(peer),
           "--peak-tflops", "0.5", "--profile", str(tmp_path / "prof"),
           "--out", str(out), "--json", str(js)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(js.read_text())
    assert [r["impl"] for r in rows] == ["flame (plain)", "eager HF loop", f"fla {fla.__version__} eager"]

    model_config = AutoConfig.from_pretrained(config)
    from fla.models import GLAForCausalLM

    model = GLAForCausalLM(model_config)
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(model_config, n_params, model.get_input_embeddings().weight.numel(), 32)
    for row in rows:
        assert row["model"] == "gla_cpu" and row["params_M"] == round(n_params / 1e6, 1)
        assert row["tok_s"] > 0 and row["step_ms"] > 0 and row["peak_active_gib"] > 0
        assert row["tflops"] == pytest.approx(fpt * row["tok_s"] / 1e12, rel=2e-2)
        assert row["mfu_pct"] == pytest.approx(100 * row["tflops"] / 0.5, rel=2e-2)
    table = out.read_text()
    assert table.startswith("device: cpu") and "torch " in table and "triton " in table and "--fla-path" in table
    for impl in ("flame", "eager", "fla_peer"):
        kernels = (tmp_path / "prof" / f"gla_cpu_{impl}.txt").read_text()
        assert "sorted by self_cpu_time_total" in kernels and "aten::mm" in kernels, kernels[:2000]
        assert re.search(r"device busy [\d.]+ ms/step .* [\d.]+ ms/step under cProfile", kernels), kernels[:300]
        assert "host (cProfile)" in kernels and "function calls" in kernels and "forward" in kernels
        trace = gzip.decompress((tmp_path / "prof" / f"gla_cpu_{impl}.trace.json.gz").read_bytes())
        assert json.loads(trace)["traceEvents"]


def test_device_busy_counts_overlapping_device_events_once(tmp_path):
    """Annotation ranges (autograd Functions, FSDP hooks) overlap their kernels; overlapping kernels count once."""
    from benchmarks.train_throughput import device_busy_ms

    events = [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "ChunkGLAFunction", "ts": 0, "dur": 5000},
        {"ph": "X", "cat": "kernel", "name": "a", "ts": 0, "dur": 1000},
        {"ph": "X", "cat": "kernel", "name": "b", "ts": 500, "dur": 1000},  # overlaps a (two streams)
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD", "ts": 3000, "dur": 250},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset", "ts": 3100, "dur": 50},  # inside the memcpy
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 9000},
        {"ph": "i", "cat": "kernel", "name": "marker", "ts": 10},
    ]
    path = tmp_path / "t.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    busy, count = device_busy_ms(str(path))
    assert count == 4 and busy == pytest.approx(1.75)  # 1.5 ms (a or b) + 0.25 ms (memcpy), in ms


def test_compile_breaks_whole_blocks_on_cpu_and_reasons(tmp_path):
    """flame compiles block by block: each CPU block traces into one graph (DeltaNet's short convolution
    did not: a data-dependent size in its PyTorch path); a break is reported with where it happened."""
    import torch._dynamo

    from benchmarks.compile_breaks import _reason, main

    out = tmp_path / "breaks.json"
    configs = [str(ROOT / "configs" / f"{name}_tiny.json") for name in ("gla", "delta_net")]
    results = main(["--config", *configs, "--seq-len", "32", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    for r, kind in zip(results, ("gla", "delta_net"), strict=True):
        assert (r["model_type"], r["graphs"], r["graph_breaks"], r["reasons"]) == (kind, 1, 0, []), r
        assert r["ops"] > 10

    def broken(x):
        x = x.sin()
        torch._dynamo.graph_break()
        return x.cos()

    torch._dynamo.reset()
    report = torch._dynamo.explain(broken)(torch.ones(3))
    assert report.graph_break_count == 1
    assert re.search(r"at test_tools\.py:\d+$", _reason(report.break_reasons[0])), _reason(report.break_reasons[0])


@pytest.mark.parametrize("item", ["model.overrides", "overrides=x", "a.b.c=1", ".key=1"])
def test_train_throughput_rejects_malformed_set(item, capsys):
    from benchmarks.train_throughput import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--config", "x.json", "--set", item])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--set {item!r}: expected SECTION.KEY=VALUE" in err, err


# ----------------------------------------------------------------------------- on the GPU machine


@pytest.mark.gpu
def test_generation_benchmark_cuda(tmp_path):
    from fla.models import GLAConfig, GLAForCausalLM

    torch.manual_seed(0)
    GLAForCausalLM(GLAConfig(hidden_size=128, num_hidden_layers=2, num_heads=4, vocab_size=300)).save_pretrained(
        tmp_path / "gla"
    )
    args = ["--model", str(tmp_path / "gla"), "--compare-transformer", "--prompt-len", "128", "--gen-len", "8",
            "--batch-size", "2", "--repeats", "2", "--device", "cuda", "--dtype", "bfloat16"]  # fmt: skip
    short = generation.main(args)
    long = generation.main([*args[:4], "256", *args[5:]])
    for row in short + long:
        assert row.prefill_tok_s > 0 and row.decode_tok_s > 0 and 0 < row.peak_gib < 2, row
    assert long[0].cache_mib == short[0].cache_mib and long[1].cache_mib > short[1].cache_mib


@pytest.mark.gpu
def test_train_throughput_cuda(tmp_path):
    js = tmp_path / "train.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--config",
           str(ROOT / "configs" / "gla_tiny.json"), str(ROOT / "configs" / "transformer_tiny.json"),
           "--batch-size", "2", "--seq-len", "256", "--steps", "3", "--warmup", "2", "--json", str(js)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(js.read_text())
    assert [(r["model"], r["impl"]) for r in rows] == [
        ("gla_tiny", "flame (plain, autocast)"),
        ("gla_tiny", "eager HF loop"),
        ("transformer_tiny", "flame (plain, autocast)"),
        ("transformer_tiny", "eager HF loop"),
    ]
    for row in rows:
        assert row["tok_s"] > 0 and 0 < row["peak_active_gib"] <= row["peak_reserved_gib"]
        assert row["mfu_pct"] == pytest.approx(100 * row["tflops"] / 989, rel=2e-2)  # the default H100/H200 peak
