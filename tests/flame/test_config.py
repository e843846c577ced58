"""flame.config: TOML + CLI parsing, precedence, and one-line errors for every bad setting."""

import json
import sys
from pathlib import Path

import pytest

from flame.config import ConfigError, FlameConfigManager, JobConfig, help_text, shard_degree
from flame.model import load_model_config
from flame.parallelize import check_tp_supported

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "llama_tiny.json")


def parse(args, world_size=1):
    return FlameConfigManager().parse_args(args, world_size=world_size)


def write_toml(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def bad(args, match, world_size=1):
    """The ConfigError raised for ``args``: one line, matching ``match``."""
    with pytest.raises(ConfigError, match=match) as info:
        parse(args, world_size)
    assert "\n" not in str(info.value), f"error is not one line: {info.value!r}"
    return info.value


# ----------------------------------------------------------------------------- parsing


def test_defaults_and_sections():
    job = parse(["--model.config", TINY])
    assert isinstance(job, JobConfig)
    assert job.training.batch_size == 8 and job.training.varlen is False
    assert job.lr_scheduler.lr_min == 0.0 and job.activation_checkpoint.mode == "none"
    assert job.checkpoint.folder == "checkpoint" and job.checkpoint.load_step == -1  # torchtitan's section
    assert hasattr(job.data, "dataset")  # flame.data's section
    assert shard_degree(job, 4) == 4


def test_toml_then_cli_wins(tmp_path):
    path = write_toml(
        tmp_path,
        f"""
[model]
config = "{TINY}"
[training]
batch_size = 4
steps = 100
compile = true
context_len = 32
seq_len = 64
[lr_scheduler]
decay_ratio = 0.2
decay_type = "cosine"
[checkpoint]
exclude_from_loading = ["optimizer"]
""",
    )
    job = parse(["--job.config_file", path, "--training.steps=7", "--training.compile", "false"])
    assert job.job.config_file == path
    assert job.training.batch_size == 4  # from the file
    assert job.training.steps == 7 and job.training.compile is False  # the command line wins
    assert job.lr_scheduler.decay_type == "cosine" and job.lr_scheduler.decay_ratio == 0.2
    assert job.checkpoint.exclude_from_loading == ["optimizer"]

    job = parse(
        [
            "--job.config_file",
            path,
            "--training.varlen",  # a bare flag is true
            "--training.batch-size",
            "1",  # dashes work like underscores
            "--training.context_len",
            "none",
            "--lr_scheduler.lr_min",
            "0.1",
            "--checkpoint.exclude_from_loading",
            "optimizer,lr_scheduler",
            "--parallelism.data_parallel_shard_degree",
            "-1",
        ]
    )
    assert job.training.varlen is True and job.training.batch_size == 1 and job.training.context_len is None
    assert job.lr_scheduler.lr_min == 0.1
    assert job.checkpoint.exclude_from_loading == ["optimizer", "lr_scheduler"]
    assert job.lr_scheduler.to_torchtitan().min_lr_factor == 0.1


def test_help_lists_every_section(capsys):
    text = help_text()
    for key in ("--training.batch_size", "--lr_scheduler.lr_min", "--parallelism.tensor_parallel_degree"):
        assert key in text
    with pytest.raises(SystemExit) as info:
        parse(["--help"])
    assert info.value.code == 0
    assert "--model.config" in capsys.readouterr().out


# ----------------------------------------------------------------------------- syntax and type errors


def test_unknown_keys_name_the_file_or_command_line(tmp_path):
    path = write_toml(tmp_path, "[training]\nbatch = 4\n")
    err = bad(["--job.config_file", path], r"training\.batch = 4: unknown key; did you mean 'training\.batch_size'")
    assert str(err).startswith(path)
    path = write_toml(tmp_path, "[trainer]\nsteps = 4\n", "s.toml")
    bad(["--job.config_file", path], r"s\.toml: trainer\.steps = 4: unknown section")
    bad(["--model.config", TINY, "--training.stepz", "3"], r"^command line: training\.stepz = '3': unknown key")
    bad(["--model.config", TINY, "steps"], r"unexpected argument")


def test_wrong_types(tmp_path):
    path = write_toml(tmp_path, '[training]\nbatch_size = "8"\n')
    bad(["--job.config_file", path], r"job\.toml: training\.batch_size = '8': expected an integer")
    path = write_toml(tmp_path, "[training]\nvarlen = 1\n", "b.toml")
    bad(["--job.config_file", path], r"training\.varlen = 1: expected true or false")
    path = write_toml(tmp_path, "[training]\nseq_len = 64.5\n", "c.toml")
    bad(["--job.config_file", path], r"training\.seq_len = 64\.5: expected an integer")
    bad(["--training.steps", "ten"], r"command line: training\.steps = 'ten': expected an integer")
    bad(["--training.max_norm", "x"], r"training\.max_norm = 'x': expected a number")
    bad(["--lr_scheduler.decay_type", "exp"], r"decay_type = 'exp': expected one of 'linear', 'sqrt', 'cosine'")
    bad(["--training.steps"], r"training\.steps = true: expected an integer")
    bad(["--training", "3"], r"expected --section\.key")
    bad(["--training.batch_size.x", "3"], r"'training\.batch_size' is a value, not a section")


def test_bad_toml_file(tmp_path):
    bad(["--job.config_file", str(tmp_path / "missing.toml")], r"job\.config_file = '.*missing\.toml': no such file")
    path = write_toml(tmp_path, "[training\nsteps = 1\n")
    bad(["--job.config_file", path], r"job\.config_file = '.*job\.toml': not valid TOML")


# ----------------------------------------------------------------------------- impossible settings


@pytest.mark.parametrize(
    "args, world_size, match",
    [
        (["--parallelism.data_parallel_shard_degree", "4"], 2, r"shard_degree = 4: .* = 4 != world size 2"),
        (["--parallelism.tensor_parallel_degree", "3"], 4, r"parallel_degree = 3: .* does not divide the world size 4"),
        (["--parallelism.data_parallel_replicate_degree", "2"], 3, r"replicate_degree = 2: .* world size 3"),
        (["--parallelism.data_parallel_shard_degree", "0"], 1, r"shard_degree = 0: must be -1"),
        (["--parallelism.context_parallel_degree", "3"], 4, r"parallel_degree = 3: .* does not divide the world"),
        (["--parallelism.context_parallel_degree", "0"], 1, r"context_parallel_degree = 0: must be >= 1"),
        (
            ["--parallelism.context_parallel_degree", "2", "--parallelism.data_parallel_shard_degree", "2"],
            2,
            r"shard_degree = 2: .* x context parallel \(2\) = 4 != world size 2",
        ),
        (
            ["--parallelism.context_parallel_degree", "2", "--training.seq_len", "33"],
            2,
            r"context_parallel_degree = 2: does not divide training\.seq_len \(33\)",
        ),
        (
            ["--parallelism.context_parallel_degree", "2", "--training.compile"],
            2,
            r"context_parallel_degree = 2: is not supported with training\.compile = true",
        ),
        (["--training.varlen", "true", "--training.batch_size", "4"], 1, r"batch_size = 4: training\.varlen = true"),
        (["--training.context_len", "4096"], 1, r"context_len = 4096: must be between 1 and training\.seq_len"),
        (["--training.batch_size", "0"], 1, r"batch_size = 0: must be >= 1"),
        (["--training.gradient_accumulation_steps", "0"], 1, r"gradient_accumulation_steps = 0: must be >= 1"),
        (["--lr_scheduler.lr_min", "2"], 1, r"lr_min = 2\.0: is a ratio of optimizer\.lr"),
        (["--lr_scheduler.decay_ratio", "1.5"], 1, r"decay_ratio = 1\.5: must be between 0 and 1"),
        (["--lr_scheduler.warmup_steps", "-1"], 1, r"warmup_steps = -1: must be >= 0"),
        (["--optimizer.lr", "0"], 1, r"optimizer\.lr = 0\.0: must be > 0"),
        (["--optimizer.early_step_in_backward"], 1, r"early_step_in_backward = true: not supported"),
        (
            ["--activation_checkpoint.mode", "selective", "--activation_checkpoint.selective_ac_option", "x"],
            1,
            r"selective_ac_option = 'x': expected a positive integer",
        ),
        (["--metrics.log_freq", "0"], 1, r"log_freq = 0: must be >= 1"),
        (["--checkpoint.interval", "0"], 1, r"checkpoint\.interval = 0: must be >= 1"),
        (["--comm.mode", "fake_backend"], 1, r"comm\.mode = 'fake_backend': only 'default'"),
        (["--training.max_consecutive_nan_inf", "0"], 1, r"max_consecutive_nan_inf = 0: must be >= 1"),
    ],
)
def test_impossible_settings(args, world_size, match):
    err = bad(["--model.config", TINY, *args], match, world_size)
    assert str(err).startswith("command line: ")


def test_combination_names_the_file_of_the_value(tmp_path):
    path = write_toml(tmp_path, f'[model]\nconfig = "{TINY}"\n[training]\nbatch_size = 2\n')
    bad(["--job.config_file", path, "--training.varlen"], r"job\.toml: training\.batch_size = 2: training\.varlen")


def test_model_config_required():
    bad([], r"^default: model\.config = '': required")


def test_cpu_offload_needs_cuda():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        parse(["--model.config", TINY, "--parallelism.enable_cpu_offload"])
    else:
        bad(["--model.config", TINY, "--parallelism.enable_cpu_offload"], r"cpu_offload = true: CPU offload needs")


def test_compile_mode_checks(monkeypatch):
    """reduce-overhead (CUDA graphs) needs compile, CUDA, one rank and no FSDP wrapper; checked up front."""
    import flame.config as cfg

    bad(["--model.config", TINY, "--training.compile_mode", "reduce-overhead"], r"compile_mode = 'reduce-overhead': "
        r"is a torch\.compile setting: set training\.compile = true")  # fmt: skip
    cg = ["--model.config", TINY, "--training.compile", "--training.compile_mode", "reduce-overhead"]
    monkeypatch.setattr(cfg, "_has_cuda", lambda: False)
    bad(cg, r"compile_mode = 'reduce-overhead': CUDA graphs need a CUDA device")
    monkeypatch.setattr(cfg, "_has_cuda", lambda: True)
    assert parse(cg).training.compile_mode == "reduce-overhead"
    bad(cg, r"compile_mode = 'reduce-overhead': CUDA graphs need a one-rank run without FSDP", world_size=2)
    bad([*cg, "--parallelism.one_rank_fsdp"], r"CUDA graphs need a one-rank run without FSDP")
    job = parse(["--model.config", TINY, "--training.compile", "--training.compile_mode", "max-autotune-no-cudagraphs"])
    assert job.training.compile_mode == "max-autotune-no-cudagraphs"
    bad(["--model.config", TINY, "--training.compile_mode", "max"], r"compile_mode = 'max': expected one of")


def test_optional_backends_must_be_installed(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    bad(["--model.config", TINY, "--metrics.enable_wandb"], r"enable_wandb = true: wandb is not installed")


# ----------------------------------------------------------------------------- model-dependent checks


def model_job(config_path, *extra):
    return parse(["--model.config", str(config_path), *extra], world_size=2)


def test_model_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.config = '.*nope\.json': no such file"):
        load_model_config(model_job(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match=r"model\.custom_module = 'no_such_module_xyz': cannot import"):
        load_model_config(model_job(TINY, "--model.custom_module", "no_such_module_xyz"))


def test_custom_module_registers_a_model(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps({**json.loads(Path(TINY).read_text()), "model_type": "nan_llama"}))
    sys.path.insert(0, str(ROOT))
    try:
        config = load_model_config(model_job(path, "--model.custom_module", "tests.flame.dist.nan_llama"))
    finally:
        sys.path.remove(str(ROOT))
    assert config.model_type == "nan_llama" and config.use_cache is False


def test_tp_support_is_checked_per_model_type(tmp_path):
    check_tp_supported(load_model_config(model_job(TINY)), 2)  # llama: 4 heads, 2 kv heads
    with pytest.raises(ConfigError, match=r"tensor_parallel_degree = 4: num_key_value_heads = 2 .* not divisible"):
        check_tp_supported(load_model_config(model_job(TINY)), 4)
    gla = json.loads((ROOT / "configs" / "gla_cpu.json").read_text())
    check_tp_supported(load_model_config(model_job(ROOT / "configs" / "gla_cpu.json")), 2)
    for name, extra, why in [
        ("hybrid", {"attn": {"layers": [1], "num_heads": 4}}, r"TP does not support hybrid gla models"),
    ]:
        path = tmp_path / f"gla_{name}.json"
        path.write_text(json.dumps({**gla, **extra}))
        with pytest.raises(ConfigError, match=why):
            check_tp_supported(load_model_config(model_job(path)), 2)
    check_tp_supported(load_model_config(model_job(ROOT / "configs" / "gated_deltanet_cpu.json")), 2)
    gdn = json.loads((ROOT / "configs" / "gated_deltanet_cpu.json").read_text())
    path = tmp_path / "gdn_v3.json"
    path.write_text(json.dumps({**gdn, "num_heads": 1, "num_v_heads": 3}))
    with pytest.raises(ConfigError, match=r"num_heads = 1 of the model config is not divisible"):
        check_tp_supported(load_model_config(model_job(path)), 2)
    gpt2 = tmp_path / "gpt2.json"
    gpt2.write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2}))
    with pytest.raises(ConfigError, match=r"tensor_parallel_degree = 2: TP not supported for gpt2"):
        check_tp_supported(load_model_config(model_job(gpt2)), 2)


def test_model_overrides_change_the_model_config(tmp_path):
    gla = ROOT / "configs" / "gla_tiny.json"
    base = load_model_config(model_job(gla))
    assert base.fuse_linear_cross_entropy is False
    config = load_model_config(
        model_job(gla, "--model.overrides", "fuse_linear_cross_entropy=true,initializer_range=0.01,hidden_act=swish")
    )
    assert config.fuse_linear_cross_entropy is True and config.initializer_range == 0.01
    assert config.hidden_act == "swish" and config.hidden_size == base.hidden_size
    toml = write_toml(tmp_path, f'[model]\nconfig = "{gla}"\noverrides = ["fuse_norm=false"]\n')
    assert load_model_config(parse(["--job.config_file", toml], world_size=2)).fuse_norm is False


def test_model_override_errors():
    bad(["--model.config", TINY, "--model.overrides", "fuse_norm"], r"model\.overrides = \['fuse_norm'\]: .* key=value")
    bad(["--model.config", TINY, "--model.overrides", "a=1,a=2"], r"model\.overrides = .*: 'a' is given twice")
    with pytest.raises(ConfigError, match=r"model\.overrides = 'no_such_field=3': the llama config .* no field"):
        load_model_config(model_job(TINY, "--model.overrides", "no_such_field=3"))


@pytest.mark.parametrize("family", ["gla", "retnet", "delta_net", "gated_deltanet", "transformer"])
def test_family_config_that_cannot_build_is_a_config_error(tmp_path, family):
    field = "num_v_heads" if family == "gated_deltanet" else "num_heads"  # GDN: head_dim is its own field
    """A family config whose heads do not divide (GLA: key dim not a multiple of num_heads) is one line, not a
    traceback from the model build; the same for a model.overrides change."""
    tiny = ROOT / "configs" / f"{family}_cpu.json"
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps({**json.loads(tiny.read_text()), field: 7}))
    with pytest.raises(ConfigError, match=rf"model\.config = '.*\.json': .*{field}=7") as info:
        load_model_config(model_job(path))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=rf"model\.overrides = .*{field}=7") as info:
        load_model_config(model_job(tiny, "--model.overrides", f"{field}=7"))
    assert "\n" not in str(info.value)


def test_fused_linear_loss_override_turns_the_logits_loss_off(tmp_path):
    """fuse_linear_cross_entropy=true (the presets' override) replaces fuse_cross_entropy: the config stays valid
    (both true is rejected by the config's checks, and an exported config.json must load again)."""
    config = load_model_config(
        model_job(ROOT / "configs" / "gla_cpu.json", "--model.overrides", "fuse_linear_cross_entropy=true")
    )
    assert config.fuse_linear_cross_entropy is True and config.fuse_cross_entropy is False
    config.save_pretrained(tmp_path)
    assert type(config).from_pretrained(tmp_path).fuse_linear_cross_entropy is True
