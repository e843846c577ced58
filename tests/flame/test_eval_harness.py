"""flame.eval.harness: the lm-eval wrapper (FlaLM) against the model's own log-probabilities and generate().

lm-evaluation-harness is a dev dependency (``lm-eval[hf]``): this file imports it and fails without
it, never skips. The model is test_eval.py's tiny trained GLA.
"""

from __future__ import annotations

import json

import lm_eval  # noqa: F401 - a missing dev dependency must fail, never skip
import pytest
import torch
import torch.nn.functional as F

from flame.eval.perplexity import load_model
from tests.flame.test_eval import train_tiny_gla

# one xdist worker runs this module: its module-scoped fixture (trainer runs) is built once
pytestmark = pytest.mark.xdist_group("eval_harness")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sample_dir, tokenizer):
    return train_tiny_gla(tmp_path_factory.mktemp("harness_model"), sample_dir, tokenizer)


@pytest.fixture(scope="module")
def flalm(model_dir):
    from flame.eval.harness import FlaLM

    return FlaLM(str(model_dir), device="cpu", dtype="float32", batch_size=2)


def _logprob(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids, use_cache=False).logits[0].double(), -1)
    targets = ids[0, n_ctx:]
    picked = logp[n_ctx - 1 : len(whole) - 1]
    return float(picked.gather(-1, targets[:, None]).sum()), bool((picked.argmax(-1) == targets).all())


def test_flalm_loglikelihood_matches_the_model(flalm, model_dir, tokenizer):
    from lm_eval.api.instance import Instance

    from fla.models import GLAForCausalLM

    assert isinstance(flalm.model, GLAForCausalLM)
    pairs = [("Ann has a red ball.", " It is on the table."), ("Tom counts:", " one, two, three"), ("Mia", " is")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    got = flalm.loglikelihood(requests)
    model = load_model(str(model_dir), "cpu")
    for (ctx, cont), (logprob, greedy) in zip(pairs, got):
        ref, ref_greedy = _logprob(model, tokenizer, ctx, cont)
        assert logprob == pytest.approx(ref, rel=1e-4), (ctx, cont)
        assert greedy == ref_greedy


def test_flalm_generate_until_matches_generate(flalm, model_dir, tokenizer):
    from lm_eval.api.instance import Instance

    prompts = ["Ann has a red ball. It is on the", "Tom counts: one, two,"]
    gen = {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}
    got = flalm.generate_until([Instance("generate_until", {}, (p, gen), i) for i, p in enumerate(prompts)])
    model = load_model(str(model_dir), "cpu")
    for prompt, text in zip(prompts, got):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n\n")[0]
        assert text == expected, (prompt, text, expected)


def test_harness_cli_runs_a_local_task(model_dir, tokenizer, tmp_path, capsys):
    from flame.eval import harness

    docs = [
        {"question": "Ann has a red ball. Where is it?", "choices": ["on the table.", "two three four"], "answer": 0},
        {"question": "Tom counts: one, two,", "choices": ["three", "table"], "answer": 0},
        {"question": "What is two plus two?", "choices": ["blue", "four"], "answer": 1},
    ]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "flame_tiny.yaml").write_text(
        f"task: flame_tiny\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n"
    )
    out = tmp_path / "results.json"
    argv = ["--model", str(model_dir), "--tasks", "flame_tiny", "--include-path", str(tmp_path), "--no-default-tasks",
            "--device", "cpu", "--dtype", "float32", "--batch-size", "2", "--output", str(out)]  # fmt: skip
    assert harness.main(argv) == 0
    acc = json.loads(out.read_text())["results"]["flame_tiny"]["acc,none"]
    model = load_model(str(model_dir), "cpu")
    # lm-eval's multiple choice: context = doc_to_text, continuation = " " (target_delimiter) + choice
    hits = [
        max(range(len(d["choices"])), key=lambda c: _logprob(model, tokenizer, d["question"], " " + d["choices"][c])[0])
        == d["answer"]
        for d in docs
    ]
    assert acc == pytest.approx(sum(hits) / len(docs))
    assert "flame_tiny" in capsys.readouterr().out
