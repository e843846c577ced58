"""flame.eval.perplexity: sliding windows against a per-token reference computed from the definition.

The model is a tiny GLA trained for a few steps on the sample corpus (so its perplexity is far
below the vocabulary size: a broken window/label layout would show), saved as an HF folder with
the sample tokenizer. The lm-eval wrapper is tested in test_eval_harness.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from flame.eval.perplexity import load_model, main, perplexity, read_tokens, windows

VOCAB = 512  # the sample tokenizer fixture's size


def train_tiny_gla(out, sample_dir, tokenizer):
    """A 1-layer GLA (hidden 32) trained 40 AdamW steps on the sample train split, saved with the tokenizer."""
    from fla.models import GLAConfig, GLAForCausalLM

    torch.manual_seed(0)
    config = GLAConfig(hidden_size=32, num_hidden_layers=1, num_heads=2, vocab_size=VOCAB, bos_token_id=1,
                       eos_token_id=2, fuse_cross_entropy=False)  # fmt: skip
    model = GLAForCausalLM(config)
    stream = read_tokens(str(sample_dir / "data"), tokenizer, split="train", max_tokens=8 * 64 * 4)
    batches = stream[: 8 * 64 * 4].view(4, 8, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(40):
        ids = batches[step % 4]
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("eval")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sample_dir, tokenizer):
    return train_tiny_gla(tmp_path_factory.mktemp("eval_model"), sample_dir, tokenizer)


@pytest.fixture(scope="module")
def valid_tokens(sample_dir, tokenizer):
    return read_tokens(str(sample_dir / "data"), tokenizer, split="validation", max_tokens=150)


def reference_nll(model, tokens: torch.Tensor, seq_len: int, stride: int) -> torch.Tensor:
    """Per-token NLL ``[N - 1]`` in float64, one forward per token, from the method's definition.

    Token ``p`` is scored by the first window if ``p < seq_len``, else by window
    ``k = ceil((p + 1 - seq_len) / stride)``, which ends at ``min(seq_len + k * stride, N)`` and
    holds the ``seq_len`` tokens before its end; the logits at ``p - 1`` predict it.
    """
    n = len(tokens)
    nll = torch.empty(n - 1, dtype=torch.float64)
    with torch.no_grad():
        for p in range(1, n):
            k = 0 if p < seq_len else math.ceil((p + 1 - seq_len) / stride)
            end = min(seq_len + k * stride, n)
            start = max(end - seq_len, 0)
            logits = model(input_ids=tokens[None, start:end], use_cache=False).logits[0, p - 1 - start]
            nll[p - 1] = -F.log_softmax(logits.double(), -1)[tokens[p]]
    return nll


@pytest.mark.parametrize("n, seq_len, stride", [(10, 4, 3), (10, 4, 1), (11, 5, 2), (3, 8, 7), (2, 2, 1), (100, 16, 5)])
def test_windows_score_every_token_once(n, seq_len, stride):
    spans = list(windows(n, seq_len, stride))
    scored = [p for _, first, end in spans for p in range(first, end)]
    assert scored == list(range(1, n)), f"every token but the first is scored once, in order: {spans}"
    for k, (start, first, end) in enumerate(spans):
        assert start < first <= end and end - start == min(seq_len, n)
        if k > 0:
            assert first - start >= seq_len - stride, f"window {k} {spans[k]} gives < seq_len - stride context"


def test_windows_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"stride must be between 1 and seq_len - 1 = 7 .* got 8"):
        list(windows(100, 8, 8))
    with pytest.raises(ValueError, match="stride must be between 1 and seq_len - 1 = 7"):
        list(windows(100, 8, 0))
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        list(windows(100, 1, 1))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        list(windows(1, 8, 4))


@pytest.mark.parametrize("seq_len, stride, batch_size", [(32, 31, 2), (32, 8, 3), (200, 50, 1)])
def test_perplexity_matches_per_token_reference(model_dir, valid_tokens, seq_len, stride, batch_size):
    model = load_model(str(model_dir), "cpu")
    result = perplexity(model, valid_tokens, seq_len, stride, batch_size)
    ref = reference_nll(model, valid_tokens, seq_len, stride)
    assert result.tokens == len(valid_tokens) - 1 == ref.numel()
    assert math.isfinite(result.loss)
    assert abs(result.loss - ref.mean().item()) < 1e-5 * ref.mean().item(), (result.loss, ref.mean().item())
    assert result.perplexity == pytest.approx(math.exp(ref.mean().item()), rel=1e-5)
    assert result.perplexity < VOCAB / 4, f"the trained model should beat uniform ({VOCAB}): {result.perplexity}"


def test_sliding_window_context_lowers_the_loss(model_dir, valid_tokens):
    model = load_model(str(model_dir), "cpu")
    no_overlap = perplexity(model, valid_tokens, seq_len=16, stride=15)
    overlap = perplexity(model, valid_tokens, seq_len=16, stride=2)
    assert overlap.tokens == no_overlap.tokens and overlap.windows > no_overlap.windows
    assert overlap.loss < no_overlap.loss, "more context per token must help a trained model"


def test_read_tokens_is_the_training_encoding(sample_dir, tokenizer):
    from flame.data import TextEncoder

    path = sample_dir / "data" / "validation-00000-of-00001.jsonl"
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()[:5]]
    expected = torch.cat([torch.from_numpy(d) for d in TextEncoder(tokenizer)(texts)])
    got = read_tokens(str(path), tokenizer, max_tokens=len(expected) - 3)
    assert got.dtype == torch.int64 and torch.equal(got, expected[:-3])
    with pytest.raises(ValueError, match="no text column 'body'"):
        read_tokens(str(path), tokenizer, text_column="body")


def test_cli_writes_the_result(model_dir, sample_dir, valid_tokens, tmp_path, capsys):
    out = tmp_path / "ppl.json"
    argv = ["--model", str(model_dir), "--dataset", str(sample_dir / "data"), "--split", "validation",
            "--seq-len", "32", "--stride", "16", "--max-tokens", "150", "--batch-size", "4", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record
    expected = perplexity(load_model(str(model_dir), "cpu"), valid_tokens, 32, 16)
    assert record["tokens"] == 149 and record["stride"] == 16
    assert record["loss"] == pytest.approx(expected.loss, rel=1e-6)


@pytest.mark.gpu
def test_perplexity_cuda_bf16_matches_cpu(tmp_path, valid_tokens):
    """The Triton path (chunk GLA, fused norms and cross-entropy) in bf16 against the CPU float32 path."""
    from fla.models import GLAConfig, GLAForCausalLM

    torch.manual_seed(0)
    config = GLAConfig(hidden_size=128, num_hidden_layers=2, num_heads=4, vocab_size=VOCAB)  # head dims 16 / 32
    GLAForCausalLM(config).save_pretrained(tmp_path)
    cpu = perplexity(load_model(str(tmp_path), "cpu"), valid_tokens, seq_len=64, stride=16, batch_size=4)
    cuda = perplexity(load_model(str(tmp_path), "cuda"), valid_tokens, seq_len=64, stride=16, batch_size=4)
    assert cuda.tokens == cpu.tokens and math.isfinite(cuda.loss)
    assert cuda.loss == pytest.approx(cpu.loss, rel=2e-2)
