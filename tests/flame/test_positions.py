"""A RoPE model trained past its max_position_embeddings: a warning at start-up (issue 32, item 9)."""

from __future__ import annotations

from types import SimpleNamespace

from flame.config import JobConfig
from flame.train import position_warning


def job(seq_len: int, varlen: bool = False, context_len: int | None = None) -> JobConfig:
    j = JobConfig()
    j.model.config = "configs/transformer_cpu.json"
    j.training.seq_len, j.training.varlen, j.training.context_len = seq_len, varlen, context_len
    return j


def test_seq_len_past_max_position_embeddings_of_a_rope_model_warns():
    rope = SimpleNamespace(max_position_embeddings=2048, rope_theta=10000.0)
    why = position_warning(rope, job(4096))
    assert why and why.startswith("training.seq_len = 4096 exceeds max_position_embeddings = 2048 of configs/")
    assert position_warning(rope, job(2048)) is None
    # varlen: positions restart per document, so the longest document (context_len) counts
    assert position_warning(rope, job(8192, varlen=True, context_len=1024)) is None
    assert "training.context_len = 4096" in position_warning(rope, job(8192, varlen=True, context_len=4096))
    # no RoPE (rope_theta None, no hybrid attention) or no limit: nothing to say
    assert position_warning(SimpleNamespace(max_position_embeddings=2048, rope_theta=None), job(4096)) is None
    assert position_warning(SimpleNamespace(max_position_embeddings=2048, attn=None), job(4096)) is None
    assert position_warning(SimpleNamespace(rope_theta=10000.0), job(4096)) is None
    hybrid = SimpleNamespace(max_position_embeddings=2048, attn={"layers": [1], "num_heads": 4})
    assert position_warning(hybrid, job(4096)) is not None
