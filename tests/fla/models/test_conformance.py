"""Conformance suite: every model-level check a model family must pass, run on every family in ``FAMILIES``.

The families (one entry each) and the helpers live in families.py. Each check is parametrized over the
families (and, where the config matters, over each family's ``variants``): forward/backward reaching every
parameter, loss == shifted cross-entropy, padded == varlen == one sequence at a time, train (chunk) == eval
(recurrent), ``generate()`` with cache == without, chunked prefill then decode, save/load bitwise, Auto*,
meta-device build + init, errors, Triton == torch, fla 0.6.0 parameter names, the repository's configs,
HF -> DCP -> HF bitwise, and TP=2 == 1 rank under torchrun (families with a TP plan).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import fla.models
from flame.config import ConfigError
from flame.parallelize import check_tp_supported
from tests.fla.models.cuda_autocast import cuda_like_autocast
from tests.fla.models.families import (
    CONFIGS,
    FAMILIES,
    FLA060_PATH,
    RATIO,
    V,
    all_name_cases,
    fla060_keys_by_family,
    greedy_by_full_forward,
    ids,
    padded_batches,
)
from tests.harness import DEVICE, assert_close, child_pythonpath, tol, using

VARIANTS = [pytest.param(f, v, id=f"{f}-{v}") for f in FAMILIES for v in f.variants]
# CI time: checks whose other variants add little run on these (each family's first variant, and its hybrid)
MAIN_VARIANTS = [p for p in VARIANTS if p.values[1] in (next(iter(p.values[0].variants)), "hybrid")]
RECURRENT_VARIANTS = [p for p in VARIANTS if p.values[0].recurrent]
family_param = pytest.mark.parametrize("family", FAMILIES, ids=str)


def _tp_families():
    out = []
    for family in FAMILIES:
        try:
            check_tp_supported(AutoConfig.from_pretrained(family.trainer_json), 2)
        except ConfigError:
            continue
        out.append(family)
    return out


TP_FAMILIES = _tp_families()


# ---- the registry ----------------------------------------------------------------------------------


def test_every_fla_family_is_registered():
    """Every model fla registers is in FAMILIES, with a configs/<family>_tiny.json of its model_type."""
    registered = _registered_model_types()
    assert registered == {f.model_type for f in FAMILIES}, "add the missing families to families.FAMILIES"
    for family in FAMILIES:
        assert json.loads(family.tiny_json.read_text())["model_type"] == family.model_type, family.tiny_json


def _registered_model_types() -> set[str]:
    from transformers import PretrainedConfig

    return {
        obj.model_type
        for obj in vars(fla.models).values()
        if isinstance(obj, type) and issubclass(obj, PretrainedConfig) and getattr(obj, "model_type", "")
    }


def _repo_configs():
    by_type = {f.model_type: f for f in FAMILIES}
    out = []
    for path in sorted(CONFIGS.glob("*.json")):
        family = by_type.get(json.loads(path.read_text()).get("model_type"))
        if family is not None:
            out.append(pytest.param(family, path, id=path.stem))
    return out


@pytest.mark.parametrize("family, path", _repo_configs())
def test_repo_configs_load(family, path):
    """Every configs/*.json of a family loads as its config and builds the parameter count in the registry."""
    size = path.stem.removeprefix(f"{family.model_type}_")
    assert size in family.params_m, f"{path.name}: add its parameter count to the {family} entry of FAMILIES"
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == family.model_type
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - family.params_m[size]) < 0.1, f"{path.name}: {n:.1f}M parameters"


@family_param
def test_every_listed_config_exists(family):
    for size in family.params_m:
        assert (CONFIGS / f"{family.model_type}_{size}.json").is_file(), size


@family_param
def test_classes_importable_from_the_package(family):
    """fla 0.6.0's ``from fla import <Layer>, <Model>, <Model>ForCausalLM``: the family's model classes and every
    token mixer its models build (the hybrid's attention layer too) are attributes of ``fla`` itself."""
    import fla
    import fla.layers

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(family.config("hybrid" if "hybrid" in family.variants else "plain"))
    classes = {type(model), type(model.base_model)}
    classes |= {type(m) for m in model.modules() if type(m).__name__ in fla.layers.__all__}
    assert len(classes) >= 3, f"{family}: no token-mixer layer of fla.layers found in the model"
    if "hybrid" in family.variants:
        assert fla.layers.Attention in classes, f"{family}: the hybrid variant built no Attention layer"
    for cls in classes:
        assert getattr(fla, cls.__name__, None) is cls, f"from fla import {cls.__name__} fails or gives another class"
        assert cls.__name__ in fla.__all__, cls.__name__


# ---- forward / backward / loss -----------------------------------------------------------------------


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_forward_backward_reaches_every_parameter(family, variant):
    model = family.model(variant).train()
    x = ids(2, 37)
    out = model(x, labels=x)
    assert out.logits.shape == (2, 37, V) and out.past_key_values is None
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_trains_under_cuda_like_autocast(family, variant):
    """flame trains under bf16 autocast. On CUDA that runs exp, sum, softmax, norms, ... in float32 while the
    projections are bf16: a layer mixing the two fails there only (HGRN's input gate, DeltaNet's sum norm, the
    hedgehog feature map and RWKV7's key did). Forward and backward under CPU autocast with CUDA's float32 list
    (tests/fla/models/cuda_autocast.py); every parameter gets a finite gradient."""
    model = family.model(variant).train()
    x = ids(2, 37)
    with cuda_like_autocast():
        out = model(x, labels=x)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@family_param
def test_triton_path_trains_under_cuda_like_autocast(family):
    """As above on the ops' Triton path (the interpreter here): an op whose PyTorch-side pieces (PaTH's
    chunk-local factors) autocast turns to bf16 hands its kernels a bf16 operand beside a float32 one, a
    compile error on the GPU. Forward and backward run; the gradients exist (the interpreter's bf16 dots are
    not exact, so no values are compared)."""
    model = family.model(num_hidden_layers=1).train()  # one block: the dtypes meet inside each
    x = ids(1, 19)
    with using("triton"):
        with cuda_like_autocast():
            out = model(x, labels=x)
        out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# families whose layers depend on their depth (HGRN2's lower bounds, as HGRN's; RWKV7's v_first): default suite.
# The others' layers are alike: slow suite (dynamo's tracing takes 3-40 s a family)
DEPTH_DEPENDENT = {"hgrn2", "rwkv7"}


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_training_forward_reads_no_layer_index(family):
    """A training forward (no cache) reads no module's ``layer_idx``: torch 2.11's dynamo guards on every integer
    attribute a compiled forward reads, even one only passed along unused, so each layer compiled anew and past the
    recompile limit (8) the rest of the model ran uncompiled (RWKV7-340M's FFN on an H100; torch 2.13 guards only
    on use, so the recompile check above cannot see it on CPU). Reads are counted through a property on the
    module's class."""
    model = family.model(num_hidden_layers=2).train()
    reads = []
    for module in model.modules():
        if isinstance(vars(module).get("layer_idx"), int):
            value = vars(module).pop("layer_idx")
            read = property(lambda self, v=value: reads.append(type(self).__name__) or v)
            module.__class__ = type(type(module).__name__, (type(module),), {"layer_idx": read})
    model(ids(2, 37), use_cache=False)
    assert not reads, f"layer_idx read in a training forward by {sorted(set(reads))}"


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, id=str(f), marks=[] if f.model_type in DEPTH_DEPENDENT else [pytest.mark.slow]) for f in FAMILIES],
)
def test_compiled_blocks_do_not_recompile_per_layer(family):
    """torch.compile guards on the attributes a forward reads: a block forward that reads a per-layer value
    (``self.layer_idx``, ``lower_bounds[self.layer_idx]``) compiles every layer anew, and past torch's recompile limit
    (8) the remaining layers run uncompiled (found on an H100 with HGRN2-340M). With the blocks compiled as flame
    compiles them (``block.compile()``; backend ``eager``: dynamo's tracing and guards, no code generation), the
    third block of a training forward reuses what the second compiled (the first may differ: RWKV7's v_first)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    if family.model_type == "mom":
        pytest.skip("MoM routes tokens with host syncs: dynamo breaks its graph at each, and the number of frames "
                    "it compiles varies from run to run")  # fmt: skip
    model = family.model(num_hidden_layers=3).train()
    frames = []
    for block in model.model.layers:
        block.register_forward_hook(lambda *_: frames.append(counters["frames"]["ok"]))
        block.compile(backend="eager")
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch._dynamo.config.patch(recompile_limit=64):
            model(ids(2, 37), use_cache=False)  # as flame trains (a cache reads the layer's slot by design)
    finally:
        torch._dynamo.reset()
    assert frames[2] == frames[1] > 0, f"frames compiled by the end of each block: {frames}"


@pytest.mark.parametrize(
    "family, path",
    # the fused CE on the logits is the shared head's: three families; the fused linear CE (flame's default) and
    # the plain path for every family
    [
        pytest.param(f, path, id=f"{path}-{f}")
        for f in FAMILIES
        for path in ("plain", "fused", "fused_linear")
        if path != "fused" or f.model_type in ("transformer", "gla", "rwkv7")
    ],
)
def test_loss_is_shifted_cross_entropy(family, path):
    flags = {"plain": {}, "fused": dict(fuse_cross_entropy=True), "fused_linear": dict(fuse_linear_cross_entropy=True)}
    model = family.model(**flags[path]).train()
    x = ids(3, 17)
    labels = x.clone()
    labels[0, 5:9] = -100
    labels[2, :] = -100
    labels[2, 3] = x[2, 3]  # one target in an otherwise ignored row
    out = model(x, labels=labels)
    assert (out.logits is None) == (path == "fused_linear"), "fused linear CE never materializes the logits"
    (dw,) = torch.autograd.grad(out.loss, model.lm_head.weight)

    logits = model.lm_head(model.model(x).last_hidden_state)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V).double(), labels[:, 1:].reshape(-1), ignore_index=-100)
    (dw_ref,) = torch.autograd.grad(ref, model.lm_head.weight)
    assert_close("loss", ref, out.loss, tol(torch.float32, 10))
    assert_close("dlm_head", dw_ref, dw, tol(torch.float32, 100))

    n = int((labels[:, 1:] != -100).sum())
    summed = model(x, labels=labels, num_items_in_batch=torch.tensor(n * 2)).loss
    assert_close("num_items_in_batch", ref / 2, summed, tol(torch.float32, 10))


@pytest.mark.parametrize("family, variant", RECURRENT_VARIANTS)
def test_train_chunk_equals_eval_recurrent(family, variant):
    """Training runs the chunk op, short eval inputs the fused_recurrent op: same logits."""
    model = family.model(variant)
    x = ids(2, 30)
    with torch.no_grad():
        chunk = model.train()(x).logits
        recurrent = model.eval()(x).logits
    assert_close("logits", chunk.double(), recurrent, RATIO)


@family_param
def test_gradient_checkpointing_same_gradients(family):
    model = family.model().train()
    x = ids(2, 11)
    g0 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    model.gradient_checkpointing_enable()  # the name both transformers 5.17 (GPU machine) and 5.23 know
    g1 = torch.autograd.grad(model(x, labels=x).loss, list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), g0, g1):
        assert_close(f"d{name}", a, b, RATIO)


# ---- padding == varlen == each sequence ----------------------------------------------------------


@pytest.mark.parametrize(
    "family, variant, side",
    # left padding for every variant; right padding (the layers' code is the same, only the mask moves) for the
    # family's first variant
    [
        pytest.param(f, v, side, id=f"{side}-{f}-{v}")
        for f in FAMILIES
        for v in f.variants
        for side in ("left", "right")
        if side == "left" or v == next(iter(f.variants))
    ],
)
def test_padded_equals_varlen_equals_each_sequence(family, variant, side):
    model = family.model(variant).train()
    lens = [9, 1, 14]
    seqs, padded, mask, packed, cu = padded_batches(lens, side)
    out_pad = model(padded, attention_mask=mask).logits
    out_var = model(packed, cu_seqlens=cu).logits[0]
    for b, s in enumerate(seqs):
        ref = model(s[None]).logits[0]
        assert_close(f"padded row {b}", ref, out_pad[b][mask[b].bool()], RATIO)
        assert_close(f"varlen seq {b}", ref, out_var[cu[b] : cu[b + 1]], RATIO)
    # backward through the unpad/repad path == through the packed path
    weights = torch.randn(sum(lens), V, device=DEVICE)
    g_pad = torch.autograd.grad((out_pad[mask.bool()] * weights).sum(), list(model.parameters()))
    g_var = torch.autograd.grad((out_var * weights).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), g_var, g_pad):
        assert_close(f"d{name}", a, b, RATIO)


# ---- cache and generation --------------------------------------------------------------------------


@pytest.mark.parametrize("family, variant", MAIN_VARIANTS)  # every variant decodes in the chunked-prefill check
def test_generate_greedy_matches_full_forward(family, variant):
    model = family.model(variant).eval()
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
        # the same prompt alone (no padding) continues the same way
        alone = model.generate(padded[1:2, -2:], max_new_tokens=6, do_sample=False, pad_token_id=0)
        new = alone.shape[1] - 2  # fewer than 6 when the row reaches eos (then the batch pads it)
        assert torch.equal(alone[0, 2:], gen.sequences[1, padded.shape[1] :][:new])


@family_param
def test_generate_stops_rows_at_eos(family):
    """A row that emits eos continues with pad_token_id, in generate and in the reference alike."""
    model = family.model().eval()
    _, padded, mask, _, _ = padded_batches([5, 3], "left")
    with torch.no_grad():
        first = model(padded, attention_mask=mask).logits[:, -1].argmax(-1)
        model.generation_config.eos_token_id = model.config.eos_token_id = int(first[0])
        gen = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        ref_seq, _ = greedy_by_full_forward(model, padded, mask, 4)
    assert torch.equal(gen, ref_seq)
    assert torch.equal(gen[0, -3:], torch.zeros(3, dtype=gen.dtype, device=gen.device)), "row 0 stopped at eos"


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_chunked_prefill_then_decode_matches_each_sequence(family, variant):
    """A long padded prefill (chunk op, > 64 tokens) then token-by-token decoding from the cache."""
    model = family.model(variant).eval()
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


@family_param
def test_generate_sampling_and_beam_search(family):
    model = family.model().eval()
    _, padded, mask, _, _ = padded_batches([5, 3], "left")
    kw = dict(attention_mask=mask, max_new_tokens=4, pad_token_id=0)
    with torch.no_grad():
        greedy = model.generate(padded, do_sample=False, **kw)
        assert torch.equal(model.generate(padded, do_sample=True, top_k=1, **kw), greedy)
        torch.manual_seed(1)
        first = model.generate(padded, do_sample=True, temperature=2.0, **kw)
        torch.manual_seed(1)
        assert torch.equal(model.generate(padded, do_sample=True, temperature=2.0, **kw), first)
        # beam search reorders the cache; without a cache it recomputes everything
        beams = model.generate(padded, num_beams=3, do_sample=False, **kw)
        assert torch.equal(model.generate(padded, num_beams=3, do_sample=False, use_cache=False, **kw), beams)


# ---- save / load / Auto* / meta init -------------------------------------------------------------


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_save_pretrained_round_trip_is_bitwise(family, variant, tmp_path):
    model = family.model(variant).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).to(DEVICE).eval()
    assert type(loaded) is type(model)
    saved, ours = loaded.config.to_dict(), model.config.to_dict()
    assert {k: v for k, v in saved.items() if k != "_name_or_path"} == {
        k: v for k, v in ours.items() if k != "_name_or_path"
    }
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    x = ids(2, 13)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


@family_param
def test_auto_classes_after_import_fla(family):
    config = AutoConfig.for_model(family.model_type, **family.fields())
    assert type(config).model_type == family.model_type
    model = AutoModelForCausalLM.from_config(config)
    base = AutoModel.from_config(config)
    assert type(model).config_class is type(config) and type(base).config_class is type(config)
    assert type(model.model) is type(base) and type(model).__name__.endswith("ForCausalLM")
    assert type(AutoConfig.from_pretrained(family.tiny_json)) is type(config)


@family_param
def test_meta_device_build_then_init_weights(family):
    """The trainer's path: build on meta, materialize, init_weights (buffers such as rotary tables included)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(family.config())
    model.to_empty(device=DEVICE)
    torch.manual_seed(0)
    model.init_weights()
    reference = family.model(perturbed=False)
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.isfinite(p).all(), name
        if q.numel() > 1 and bool((q == q.flatten()[0]).all()):  # constant init (norm weights, biases, ...)
            assert torch.equal(p, q), name
        elif q.numel() >= 256:  # random init: the same spread
            assert abs(p.std() / q.std() - 1) < 0.25, f"{name}: std {p.std():.4g}, not {q.std():.4g}"
    for (name, b), c in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, c), name
    model.load_state_dict(reference.state_dict())
    x = ids(2, 9)
    with torch.no_grad():
        assert torch.equal(model(x).logits, reference(x).logits)


# ---- errors and backends -----------------------------------------------------------------------------


@family_param
def test_errors_are_clear(family):
    model = family.model()
    x = ids(2, 5)
    with pytest.raises(ValueError, match=r"only \[batch_size, seq_len\] padding masks"):
        model(x, attention_mask=torch.ones(2, 5, 5, dtype=torch.long, device=DEVICE))
    with pytest.raises(ValueError, match="fuse_cross_entropy and fuse_linear_cross_entropy are both true"):
        family.config(fuse_cross_entropy=True, fuse_linear_cross_entropy=True)
    fields, message = family.bad_heads
    with pytest.raises(ValueError, match=message):
        family.model(**fields)
    with pytest.raises(ValueError, match=r"labels has shape \[2, 4\], expected \[2, 5\]"):
        model(x, labels=x[:, :4])
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    if family.recurrent:
        with pytest.raises(ValueError, match="cu_seqlens given, so the batch size must be 1"):
            model(x, cu_seqlens=torch.tensor([0, 5], dtype=torch.int32, device=DEVICE))
        if family.hybrid:
            with pytest.raises(ValueError, match=r"attn\['layers'\] has indices \[7\]"):
                family.config(attn={"layers": [7], "num_heads": 2})
        if family.mode_field is not None:
            with pytest.raises(ValueError, match="mode='bogus' is not one of"):
                family.model(**{family.mode_field: "bogus"})
        cache = model(x, use_cache=True).past_key_values
        with pytest.raises(ValueError, match="the new tokens must not be padding"):
            mask = torch.ones(2, 6, dtype=torch.long, device=DEVICE)
            mask[0, -1] = 0
            model(x[:, :1], attention_mask=mask, past_key_values=cache)


def _triton_params():
    return [pytest.param(f, id=str(f), marks=[pytest.mark.slow] if f.slow_triton else []) for f in FAMILIES]


@pytest.mark.parametrize("family", _triton_params())
def test_triton_backend_matches_torch_backend(family):
    """The Triton kernels (the interpreter on CPU) give the torch path's logits, gradients and cached decoding."""
    model = family.model(num_hidden_layers=1, **({"use_short_conv": True} if family.recurrent else {}))
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


# ---- fla 0.6.0 parameter names -----------------------------------------------------------------------


def test_fla060_snapshot_covers_the_registry():
    """The snapshot was written for the registry's name cases (else regenerate it: families.py's __main__)."""
    snapshot = fla060_keys_by_family()
    assert json.loads(json.dumps(all_name_cases())) == snapshot["cases"], (
        "the families' test configs changed: regenerate fla060_keys.json with fla 0.6.0 "
        "(FLA060_PATH=... python -m tests.fla.models.families)"
    )


@family_param
def test_parameter_names_equal_fla060(family):
    """Same keys and shapes as fla 0.6.0 for the same configs (its snapshot; see write_fla060_snapshot)."""
    snapshot = fla060_keys_by_family()
    assert snapshot["cases"][family.model_type] == json.loads(json.dumps(family.name_cases()))
    for (model_type, fields), theirs in zip(family.name_cases(), snapshot["keys"][family.model_type], strict=True):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **fields))
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert ours == theirs, (
            f"{fields}: only ours {sorted(set(ours) - set(theirs))}, only fla060 {sorted(set(theirs) - set(ours))}, "
            f"shapes differ {[k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k]]}"
        )


@pytest.mark.slow  # ~30 s: builds fla 0.6.0's models in a subprocess
def test_fla060_snapshot_is_current():
    """The committed snapshot equals what fla 0.6.0 (at FLA060_PATH) builds now."""
    live = fla060_keys_by_family(live=True)
    if live is None:
        pytest.fail(f"flash-linear-attention 0.6.0 not found at FLA060_PATH={FLA060_PATH}")
    assert json.loads(json.dumps(live)) == fla060_keys_by_family()


# ---- HF <-> DCP, tensor parallel -----------------------------------------------------------------------


@pytest.mark.parametrize("family, variant", VARIANTS)
def test_hf_dcp_hf_bitwise(family, variant, tmp_path):
    """HF -> DCP (step-0) -> the trainer's CheckpointManager loads it -> full checkpoint -> HF: bitwise."""
    from flame.convert.dcp_to_hf import dcp_to_hf
    from flame.convert.hf_to_dcp import hf_to_dcp
    from tests.flame.test_convert import assert_same_state, checkpoint_manager, save_full_checkpoint

    source = family.model(variant, seed=1)
    source.save_pretrained(tmp_path / "src")
    dump = tmp_path / "dump"
    hf_to_dcp(str(tmp_path / "src"), str(dump / "checkpoint" / "step-0"))

    # auto-resume path: <dump>/checkpoint/step-0 is a model-only checkpoint
    trained = family.model(variant, seed=2)
    assert not torch.equal(trained.lm_head.weight, source.lm_head.weight)
    assert checkpoint_manager(trained, dump).load()
    assert_same_state(source.state_dict(), trained.state_dict())

    # "train 0 steps", save a full checkpoint at step 7, export the latest with the run's config
    save_full_checkpoint(trained, dump / "checkpoint" / "step-7", step=7)
    source.config.save_pretrained(tmp_path / "cfg")
    out = dcp_to_hf(str(dump), str(tmp_path / "cfg"), out=str(tmp_path / "hf"))
    exported = AutoModelForCausalLM.from_pretrained(str(out))
    assert type(exported) is type(source)
    assert_same_state(source.state_dict(), exported.state_dict())


def test_some_family_has_a_tp_plan():
    assert TP_FAMILIES, "flame.parallelize.check_tp_supported refuses TP=2 for every family"


@pytest.fixture(scope="module")
def tp_results(tmp_path_factory) -> dict:
    """Every TP family's plan against its unsplit model (tests/fla/models/tp_worker.py): one torchrun launch."""
    from tests.flame.test_train import ROOT, free_port

    out = tmp_path_factory.mktemp("tp") / "results.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += [str(ROOT / "tests" / "fla" / "models" / "tp_worker.py"), str(out)]
    cmd += [str(f.trainer_json) for f in TP_FAMILIES]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.xdist_group("tp_plans")  # one worker: tp_results' torchrun launch runs once
@pytest.mark.parametrize("family", TP_FAMILIES, ids=str)
def test_tensor_parallel_plan_matches_unsplit_model(family, tp_results):
    """The family's TP plan (2 gloo ranks) against the same model unsplit: the loss and every parameter's
    gradient of one forward + backward (fp32: only sums in another order differ, ~1e-6; a wrong split or a
    missing reduction is O(1e-2) or more)."""
    result = tp_results[str(family.trainer_json)]
    assert "error" not in result, result.get("error")
    assert result["loss"] < 1e-5 and result["grad"] < 1e-4, result


# the trainer's TP path (AC, gradient accumulation, optimizer steps) is family-agnostic once the plan is right:
# two plan kinds run it by default here (a linear mixer, full-width norms), the others with --run-slow; the
# attention plan runs it in tests/flame/test_train.py ("TP x2", Transformer++)
TRAINER_TP = {"gla", "hgrn2"}


@pytest.mark.parametrize(
    "family",
    [f if f.model_type in TRAINER_TP else pytest.param(f, marks=pytest.mark.slow) for f in TP_FAMILIES],
    ids=str,
)
def test_tensor_parallel_matches_one_rank(family, tmp_path):
    """The family's TP plan through the trainer (torchrun, 2 gloo ranks) against the same model on one rank:
    the trainer's losses and gradient norms over 6 steps."""
    from tests.flame.test_train import COMMON, launch

    args = COMMON + ["--model.config", str(family.trainer_json), "--activation_checkpoint.mode", "full"]
    args += ["--training.gradient_accumulation_steps", "4"]
    ref = launch(1, args, tmp_path / "one")
    tp = launch(2, args + ["--parallelism.tensor_parallel_degree", "2"], tmp_path / "tp")
    for proc, _ in (ref, tp):
        assert proc.returncode == 0, proc.stderr[-5000:]
    losses = [r["loss/avg"] for r in ref[1]]
    assert losses[-1] < losses[0] - 0.5, losses
    pairs = list(zip(ref[1], tp[1], strict=True))
    rel = {k: [abs(g[k] - r[k]) / abs(r[k]) for r, g in pairs] for k in ("grad_norm", "loss/avg")}
    print(f"{family}: relative differences TP 2 vs 1 rank per logged step: {rel}")
    # Same parameters (step 1): only fp32 sums in another order (partial outputs all-reduced), ~1e-6. Later
    # steps drift as Adam amplifies those differences (~1e-5); a wrong split or reduction is O(1e-2) or more.
    # all(): a NaN fails (Python's max may drop it)
    assert rel["grad_norm"][0] < 1e-5 and all(x < 1e-5 for x in rel["loss/avg"]), rel
    assert all(x < family.tp_grad_drift for x in rel["grad_norm"]), rel


# ---- GPU -------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@family_param
def test_340M_bf16_forward_backward_on_cuda(family):
    config = AutoConfig.from_pretrained(CONFIGS / f"{family.model_type}_340M.json")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16).train()
    x = torch.randint(0, config.vocab_size, (2, 2048), device="cuda")
    loss = model(x, labels=x).loss
    assert abs(loss.item() - torch.log(torch.tensor(float(config.vocab_size))).item()) < 1.0, loss.item()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # packed varlen batch of the same tokens: loss within bf16 noise of the padded-free batch
    cu = torch.tensor([0, 1, 1500, 2048, 4096], dtype=torch.int32, device="cuda")
    varlen_loss = model(x.reshape(1, -1), labels=x.reshape(1, -1), cu_seqlens=cu).loss
    assert torch.isfinite(varlen_loss) and abs(varlen_loss.item() - loss.item()) < 0.1
    model.eval()
    with torch.no_grad():
        gen = model.generate(x[:, :100], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert gen.shape == (2, 108)
