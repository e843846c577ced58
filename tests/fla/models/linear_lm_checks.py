"""Checks every linear-attention causal LM must pass; ``test_<family>.py`` subclasses :class:`LinearLMChecks`.

A subclass sets ``config_cls`` / ``model_cls`` / ``base_model_cls``, ``model_type``, ``tiny`` (config
fields of a small CPU model) and ``variants`` (extra field sets exercised by the forward, padding
and cache tests: short convolutions, GQA, unfused norms, a hybrid attention layer, ...).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import fla  # noqa: F401  (registers the Auto* classes)
from tests.harness import DEVICE, assert_close, tol, using

ROOT = Path(__file__).resolve().parents[3]
FLA060_PATH = os.environ.get("FLA060_PATH", "/tmp/fla060")
V = 101
RATIO = tol(torch.float32, 20)
HYBRID = {"attn": {"layers": [1], "num_heads": 2, "num_kv_heads": 1, "window_size": None, "rope_theta": 10000.0}}


def ids(*shape):
    return torch.randint(3, V, shape, device=DEVICE)


def padded_batches(lens, side):
    """Random sequences of ``lens`` as a padded batch (+ mask) and as a packed varlen batch (+ cu_seqlens)."""
    T = max(lens)
    seqs = [ids(n) for n in lens]
    padded = torch.zeros(len(lens), T, dtype=torch.long, device=DEVICE)
    mask = torch.zeros_like(padded)
    for b, s in enumerate(seqs):
        where = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        padded[b, where], mask[b, where] = s, 1
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    return seqs, padded, mask, torch.cat(seqs)[None], cu


def greedy_by_full_forward(model, x, mask, steps, pad_token_id=0):
    """Greedy continuation recomputing the whole (left-padded) batch every step, no cache.

    Like ``generate``, a row that has produced ``eos_token_id`` continues with ``pad_token_id``.
    """
    logits = []
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        last = model(x, attention_mask=mask, use_cache=False).logits[:, -1]
        logits.append(last)
        nxt = torch.where(done, pad_token_id, last.argmax(-1))
        done |= nxt == model.config.eos_token_id
        x = torch.cat([x, nxt[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
    return x, logits


_FAMILIES: list[type] = []  # every LinearLMChecks subclass, so one fla 0.6.0 subprocess serves them all


def name_cases(family) -> list[list]:
    """``[model_type, fields]`` of every config whose parameter names a family compares with fla 0.6.0."""
    cases = [*family.variants.values(), *family.name_only_variants.values()]
    return [[family.model_type, {**family.tiny, "vocab_size": V, **fields}] for fields in cases]


# fla 0.6.0's keys for name_cases(), written by fla 0.6.0 itself (see write_fla060_snapshot), so the name
# check runs on every machine; test_fla060_snapshot_is_current (slow) re-derives it from fla 0.6.0.
FLA060_SNAPSHOT = Path(__file__).with_name("fla060_keys.json")


def _all_name_cases() -> dict[str, list[list]]:
    return {family.model_type: name_cases(family) for family in _FAMILIES}


@functools.cache
def fla060_keys_by_family(live: bool = False) -> dict[str, list[dict]] | None:
    """fla 0.6.0's ``{key: shape}`` for :func:`name_cases` of every family.

    From the committed snapshot, or (``live=True``) from fla 0.6.0 at FLA060_PATH in one subprocess
    (``None`` when it is not there).
    """
    cases = _all_name_cases()
    if not live:
        snapshot = json.loads(FLA060_SNAPSHOT.read_text())
        for model_type, family_cases in json.loads(json.dumps(cases)).items():  # the families imported so far
            assert snapshot["cases"].get(model_type) == family_cases, (
                f"the {model_type} test configs changed: regenerate {FLA060_SNAPSHOT.name} with fla 0.6.0 "
                "(FLA060_PATH=... python -m tests.fla.models.linear_lm_checks)"
            )
        return snapshot["keys"]
    flat = fla060_keys([case for family_cases in cases.values() for case in family_cases])
    if flat is None:
        return None
    out, i = {}, 0
    for model_type, family_cases in cases.items():
        out[model_type], i = flat[i : i + len(family_cases)], i + len(family_cases)
    return out


def write_fla060_snapshot() -> None:
    """Write :data:`FLA060_SNAPSHOT` from fla 0.6.0 at FLA060_PATH.

    Run as ``FLA060_PATH=... python -m tests.fla.models.linear_lm_checks``.
    """
    import tests.fla.models.test_delta_net  # noqa: F401  (registers the families)
    import tests.fla.models.test_gated_deltanet  # noqa: F401
    import tests.fla.models.test_gla  # noqa: F401
    import tests.fla.models.test_retnet  # noqa: F401

    keys = fla060_keys_by_family(live=True)
    if keys is None:
        raise SystemExit(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
    FLA060_SNAPSHOT.write_text(json.dumps({"cases": _all_name_cases(), "keys": keys}, indent=1, sort_keys=True) + "\n")


def fla060_keys(cases: list) -> list[dict] | None:
    """fla 0.6.0's ``{key: shape}`` per ``(model_type, fields)`` case, or ``None`` when it is not at FLA060_PATH."""
    if not (Path(FLA060_PATH) / "fla" / "__init__.py").exists():
        return None
    env = {**os.environ, "PYTHONPATH": FLA060_PATH, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    script = Path(__file__).with_name("fla060_keys.py")
    run = subprocess.run(
        [sys.executable, str(script), json.dumps(cases)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"building fla 0.6.0's models failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def pytest_generate_tests(metafunc):
    """Parametrize ``variant`` over the test class's ``variants`` (import this into the test module)."""
    if "variant" in metafunc.fixturenames:
        metafunc.parametrize("variant", list(metafunc.cls.variants))


class LinearLMChecks:
    config_cls: type
    model_cls: type
    base_model_cls: type
    model_type: str
    tiny: dict
    variants: dict[str, dict]  # run by every ``variant`` test; must hold "hybrid"
    name_only_variants: dict[str, dict] = {}  # only compared with fla 0.6.0's parameter names
    bad_heads: tuple[dict, str] = (dict(num_kv_heads=3), "is not a multiple of num_kv_heads")  # fields, error

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _FAMILIES.append(cls)

    def config(self, **kw):
        return self.config_cls(**{**self.tiny, "vocab_size": V, "fuse_cross_entropy": False, **kw})

    def model(self, seed=0, **kw):
        torch.manual_seed(seed)
        return self.model_cls(self.config(**kw)).to(DEVICE)

    # ---- forward / backward / loss ----------------------------------------------------------------

    def test_forward_backward_reaches_every_parameter(self, variant):
        model = self.model(**self.variants[variant]).train()
        x = ids(2, 37)
        out = model(x, labels=x)
        assert out.logits.shape == (2, 37, V) and out.past_key_values is None
        out.loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"

    @pytest.mark.parametrize("path", ["plain", "fused_linear"])
    def test_loss_is_shifted_cross_entropy(self, path):
        model = self.model(fuse_linear_cross_entropy=path == "fused_linear").train()
        x = ids(3, 17)
        labels = x.clone()
        labels[0, 5:9] = -100
        labels[2, :] = -100
        labels[2, 3] = x[2, 3]
        out = model(x, labels=labels)
        logits = model.lm_head(model.model(x).last_hidden_state)
        ref = F.cross_entropy(logits[:, :-1].reshape(-1, V).double(), labels[:, 1:].reshape(-1), ignore_index=-100)
        assert_close("loss", ref, out.loss, tol(torch.float32, 10))

    def test_train_chunk_equals_eval_recurrent(self, variant):
        """Training runs the chunk op, short eval inputs the fused_recurrent op: same logits."""
        model = self.model(**self.variants[variant])
        x = ids(2, 30)
        with torch.no_grad():
            chunk = model.train()(x).logits
            recurrent = model.eval()(x).logits
        assert_close("logits", chunk.double(), recurrent, RATIO)

    # ---- padding == varlen == each sequence ------------------------------------------------------

    @pytest.mark.parametrize("side", ["left", "right"])
    def test_padded_equals_varlen_equals_each_sequence(self, side, variant):
        model = self.model(**self.variants[variant]).train()
        lens = [9, 1, 14]
        seqs, padded, mask, packed, cu = padded_batches(lens, side)
        out_pad = model(padded, attention_mask=mask).logits
        out_var = model(packed, cu_seqlens=cu).logits[0]
        for b, s in enumerate(seqs):
            ref = model(s[None]).logits[0]
            assert_close(f"padded row {b}", ref, out_pad[b][mask[b].bool()], RATIO)
            assert_close(f"varlen seq {b}", ref, out_var[cu[b] : cu[b + 1]], RATIO)
        weights = torch.randn(sum(lens), V, device=DEVICE)
        g_pad = torch.autograd.grad((out_pad[mask.bool()] * weights).sum(), list(model.parameters()))
        g_var = torch.autograd.grad((out_var * weights).sum(), list(model.parameters()))
        for (name, _), a, b in zip(model.named_parameters(), g_var, g_pad):
            assert_close(f"d{name}", a, b, RATIO)

    # ---- cache and generation --------------------------------------------------------------------

    def test_generate_greedy_matches_full_forward(self, variant):
        model = self.model(**self.variants[variant]).eval()
        _, padded, mask, _, _ = padded_batches([6, 2, 9], "left")
        with torch.no_grad():
            gen = model.generate(
                padded, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0,
                return_dict_in_generate=True, output_logits=True,
            )  # fmt: skip
            ref_seq, ref_logits = greedy_by_full_forward(model, padded, mask, 6)
            assert torch.equal(gen.sequences, ref_seq)
            for step, (a, b) in enumerate(zip(ref_logits, gen.logits)):
                assert_close(f"logits step {step}", a, b, RATIO)
            alone = model.generate(padded[1:2, -2:], max_new_tokens=6, do_sample=False, pad_token_id=0)
            new = alone.shape[1] - 2  # fewer than 6 when the row reaches eos (then the batch pads it)
            assert torch.equal(alone[0, 2:], gen.sequences[1, padded.shape[1] :][:new])

    def test_generate_stops_rows_at_eos(self):
        """A row that emits eos continues with pad_token_id, in generate and in the reference alike."""
        model = self.model().eval()
        _, padded, mask, _, _ = padded_batches([5, 3], "left")
        with torch.no_grad():
            first = model(padded, attention_mask=mask).logits[:, -1].argmax(-1)
            model.generation_config.eos_token_id = model.config.eos_token_id = int(first[0])
            gen = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
            ref_seq, _ = greedy_by_full_forward(model, padded, mask, 4)
        assert torch.equal(gen, ref_seq)
        assert torch.equal(gen[0, -3:], torch.zeros(3, dtype=gen.dtype)), "row 0 stopped at eos"

    def test_chunked_prefill_then_decode_matches_each_sequence(self, variant):
        """A long padded prefill (chunk op, > 64 tokens) then token-by-token decoding from the cache."""
        model = self.model(**self.variants[variant]).eval()
        lens = [72, 40]
        seqs, padded, mask, _, _ = padded_batches(lens, "left")
        extra = ids(2, 3)
        with torch.no_grad():
            out = model(padded, attention_mask=mask, use_cache=True)
            cache, logits = out.past_key_values, [out.logits[:, -1]]
            for t in range(3):
                mask = torch.cat([mask, mask.new_ones(2, 1)], 1)
                step = model(extra[:, t : t + 1], attention_mask=mask, past_key_values=cache, use_cache=True)
                cache = step.past_key_values
                logits.append(step.logits[:, -1])
            for b, s in enumerate(seqs):
                full = model(torch.cat([s, extra[b]])[None]).logits[0, len(s) - 1 :]
                assert_close(f"row {b}", full, torch.stack([lg[b] for lg in logits]), RATIO)

    def test_generate_sampling_and_beam_search(self):
        model = self.model().eval()
        _, padded, mask, _, _ = padded_batches([5, 3], "left")
        kw = dict(attention_mask=mask, max_new_tokens=4, pad_token_id=0)
        with torch.no_grad():
            greedy = model.generate(padded, do_sample=False, **kw)
            assert torch.equal(model.generate(padded, do_sample=True, top_k=1, **kw), greedy)
            beams = model.generate(padded, num_beams=2, do_sample=False, **kw)
            assert torch.equal(model.generate(padded, num_beams=2, do_sample=False, use_cache=False, **kw), beams)

    # ---- save / load / Auto* / compatibility -----------------------------------------------------

    def test_save_pretrained_round_trip_is_bitwise(self, tmp_path):
        model = self.model(**self.variants["hybrid"]).eval()
        model.save_pretrained(tmp_path)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path).to(DEVICE).eval()
        assert type(loaded) is self.model_cls and loaded.config.attn == model.config.attn
        x = ids(2, 13)
        with torch.no_grad():
            assert torch.equal(model(x).logits, loaded(x).logits)

    def test_auto_classes_after_import_fla(self):
        config = AutoConfig.for_model(self.model_type, **{**self.tiny, "vocab_size": V})
        assert type(config) is self.config_cls
        assert type(AutoModel.from_config(config)) is self.base_model_cls
        assert type(AutoModelForCausalLM.from_config(config)) is self.model_cls

    def test_meta_device_build_then_init_weights(self):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.config())
        model.to_empty(device=DEVICE)
        model.init_weights()
        reference = self.model()
        model.load_state_dict(reference.state_dict())
        x = ids(2, 9)
        with torch.no_grad():
            assert torch.equal(model(x).logits, reference(x).logits)

    @pytest.mark.slow  # ~25 s: builds fla 0.6.0's models in a subprocess
    def test_fla060_snapshot_is_current(self):
        """The committed snapshot equals what fla 0.6.0 (at FLA060_PATH) builds now."""
        live = fla060_keys_by_family(live=True)
        if live is None:
            pytest.fail(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
        assert live[self.model_type] == fla060_keys_by_family()[self.model_type]

    def test_parameter_names_equal_fla060(self):
        """Same keys and shapes as fla 0.6.0 for the same configs (its snapshot; see write_fla060_snapshot)."""
        by_family = fla060_keys_by_family()
        for (_, fields), their_keys in zip(name_cases(type(self)), by_family[self.model_type]):
            with torch.device("meta"):
                ours = {k: list(v.shape) for k, v in self.model_cls(self.config_cls(**fields)).state_dict().items()}
            assert ours == their_keys, (
                f"{fields}: only ours {sorted(set(ours) - set(their_keys))}, "
                f"only fla060 {sorted(set(their_keys) - set(ours))}, "
                f"shapes differ {[k for k in ours.keys() & their_keys.keys() if ours[k] != their_keys[k]]}"
            )

    def test_errors_are_clear(self):
        model = self.model()
        x = ids(2, 5)
        with pytest.raises(ValueError, match=r"only \[batch_size, seq_len\] padding masks"):
            model(x, attention_mask=torch.ones(2, 5, 5, dtype=torch.long, device=DEVICE))
        with pytest.raises(ValueError, match="cu_seqlens given, so the batch size must be 1"):
            model(x, cu_seqlens=torch.tensor([0, 5], dtype=torch.int32, device=DEVICE))
        with pytest.raises(ValueError, match=r"attn\['layers'\] has indices \[7\]"):
            self.config(attn={"layers": [7], "num_heads": 2})
        with pytest.raises(ValueError, match="mode='bogus' is not one of"):
            self.model(attn_mode="bogus")
        with pytest.raises(ValueError, match="use_l2warp=true is not supported"):
            self.config(use_l2warp=True)
        fields, message = self.bad_heads
        with pytest.raises(ValueError, match=message):
            self.model(**fields)
        cache = model(x, use_cache=True).past_key_values
        with pytest.raises(ValueError, match="the new tokens must not be padding"):
            mask = torch.ones(2, 6, dtype=torch.long, device=DEVICE)
            mask[0, -1] = 0
            model(x[:, :1], attention_mask=mask, past_key_values=cache)

    def test_triton_backend_matches_torch_backend(self):
        """The Triton kernels (the interpreter on CPU) give the torch path's logits, gradients and cached decoding."""
        model = self.model(num_hidden_layers=1, use_short_conv=True)
        x = ids(2, 19)
        grads = []
        for backend in ("torch", "triton"):
            with using(backend):
                model.train().zero_grad()
                out = model(x, labels=x)
                out.loss.backward()
                grads.append([p.grad.clone() for p in model.parameters()])
                with torch.no_grad():
                    cache = model.eval()(x[:, :-1], use_cache=True).past_key_values
                    step = model(x[:, -1:], past_key_values=cache).logits
                if backend == "torch":
                    ref_logits, ref_step = out.logits.detach(), step
        assert_close("logits", ref_logits, out.logits, RATIO)
        assert_close("decode step", ref_step, step, RATIO)
        for (name, _), a, b in zip(model.named_parameters(), *grads):
            assert_close(f"d{name}", a, b, RATIO)


if __name__ == "__main__":  # the families register in the package module, not in __main__
    from tests.fla.models.linear_lm_checks import write_fla060_snapshot as write

    write()
