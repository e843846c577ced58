"""A normal run prints no warnings that are not the user's problem, and a finished run says it is finished.

The noise (issue 32, item 11): torchtitan's "ENV[TORCH_NCCL_ASYNC_ERROR_HANDLING] ... will be
overridden" on a CPU run (torchrun exports that NCCL variable), torchdata's "'set_vital' is
deprecated", and transformers' "`past_key_values`/`cache_params` are deprecated" (fla's models
built their outputs with the old name).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.harness import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]
NOISE = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "set_vital", "past_key_values", "cache_params")


def train(dump: Path, sample_dir: Path) -> str:
    args = [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--job.dump_folder", str(dump),
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--data.dataset", str(sample_dir / "data"),
        "--training.steps", "2", "--training.batch_size", "2", "--training.seq_len", "32",
        "--lr_scheduler.warmup_steps", "1", "--lr_scheduler.decay_ratio", "none",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"  # what torchrun exports to every worker
    proc = subprocess.run(
        [sys.executable, "-m", "flame.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def test_tiny_run_prints_no_foreign_warnings_and_a_finished_run_says_so(tmp_path, sample_dir):
    out = train(tmp_path / "run", sample_dir)
    assert "step 2/2" in out
    noise = [line for line in out.splitlines() if any(word in line for word in NOISE)]
    assert not noise, "\n".join(noise)
    again = train(tmp_path / "run", sample_dir)
    assert "Training starts at step 3" not in again
    assert "already finished (step 2 of 2)" in again


@pytest.fixture
def transformers_log():
    """transformers' log records (its ``warning_once`` cache cleared, so earlier tests cannot hide one)."""
    from transformers.utils import logging as hf_logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.Logger.warning_once.cache_clear()
    handler = Keep(level=logging.WARNING)
    hf_logger = hf_logging.get_logger("transformers")
    hf_logger.addHandler(handler)
    try:
        yield records
    finally:
        hf_logger.removeHandler(handler)


@pytest.mark.parametrize("family", ["transformer", "gla", "gated_deltanet"])
def test_forward_and_generate_speak_the_new_cache_name(family, transformers_log, recwarn):
    """transformers >= 5.24 passes ``cache=`` and its outputs hold ``cache``: no deprecation from fla's models;
    the old ``past_key_values`` argument still works and gives the same logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla  # noqa: F401
    from fla.models.modeling_utils import CACHE_FIELD

    config = AutoConfig.from_pretrained(str(ROOT / "configs" / f"{family}_cpu.json"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 7))
    with torch.no_grad():
        out = model(ids[:, :6], use_cache=True)
        cache = getattr(out, CACHE_FIELD)
        new = model(ids[:, 6:], **{CACHE_FIELD: cache}, use_cache=True).logits
        model.generate(ids, max_new_tokens=3, do_sample=False)
        model.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    noise = [m for m in transformers_log if "deprecated" in m] + [
        str(w.message) for w in recwarn if "past_key_values" in str(w.message)
    ]
    assert not noise, noise
    with torch.no_grad():  # the old name still works
        old_cache = model(ids[:, :6], use_cache=True).past_key_values
        old = model(ids[:, 6:], past_key_values=old_cache, use_cache=True).logits
    torch.testing.assert_close(old, new)
