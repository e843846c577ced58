"""HF <-> DCP converters: the trainer-side load through torchtitan's CheckpointManager, HF export that loads
and generates, dtypes, tied embeddings, and clear errors. The bitwise HF -> DCP -> HF round trip of every
model family is in the conformance suite (tests/fla/models/test_conformance.py), with these helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import fla  # noqa: F401
from flame.convert import ConvertError, load_hf_into, read_model_tensors, step_folder
from flame.convert.dcp_to_hf import dcp_to_hf
from flame.convert.dcp_to_hf import main as dcp_to_hf_main
from flame.convert.hf_to_dcp import hf_to_dcp
from flame.convert.hf_to_dcp import main as hf_to_dcp_main
from tests.harness import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 512  # the session sample tokenizer's size


def tiny_config(model_type: str, **overrides):
    """The family's config json shrunk to 2 layers of width 64 and the sample vocabulary."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(ROOT / "configs" / f"{model_type}_tiny.json"))
    small = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": VOCAB, "intermediate_size": None}
    if getattr(config, "head_dim", None):
        small["head_dim"] = 16
    heads = getattr(config, "num_heads", None)
    if heads and 64 % heads:
        small["num_heads"] = 4
    for key, value in {**small, **overrides}.items():
        setattr(config, key, value)
    return config


def build(config, seed: int):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), f"{key} differs"


def checkpoint_manager(model, dump: Path, **checkpoint):
    """torchtitan's CheckpointManager as the trainer builds it, for the model only."""
    from torchtitan.components.checkpoint import CheckpointManager
    from torchtitan.config import job_config as tt

    cfg = tt.Checkpoint(enable=True, keep_latest_k=0, **checkpoint)
    return CheckpointManager(None, [model], None, None, {}, cfg, None, base_folder=str(dump))


def save_full_checkpoint(model, step_dir: Path, step: int):
    """A training checkpoint as torchtitan lays it out: flattened model keys + nested states."""
    import torch.distributed.checkpoint as dcp
    from torchtitan.components.checkpoint import ModelWrapper

    states = dict(ModelWrapper(model).state_dict())
    states["optimizer"] = {"state": {"lm_head.weight": {"exp_avg": torch.randn(3)}}, "param_groups": [{"lr": 1e-3}]}
    states["lr_scheduler"] = {"last_epoch": step}
    states["dataloader"] = {"dp_rank_0": b"loader state"}
    states["train_state"] = {"step": step, "ntokens_seen": 1000}
    dcp.save(states, checkpoint_id=str(step_dir))


def test_initial_load_path_model_only(tmp_path):
    """``--checkpoint.initial_load_path <dcp> --checkpoint.initial_load_model_only`` into a fresh run."""
    config = tiny_config("gla")
    source = build(config, seed=1)
    source.save_pretrained(tmp_path / "src")
    hf_to_dcp(str(tmp_path / "src"), str(tmp_path / "init"))
    model = build(config, seed=2)
    manager = checkpoint_manager(
        model, tmp_path / "run", initial_load_path=str(tmp_path / "init"), initial_load_model_only=True
    )
    assert manager.load()
    assert_same_state(source.state_dict(), model.state_dict())


def test_initial_load_path_hf_folder(tmp_path):
    """``--checkpoint.initial_load_path <HF folder>``: continued pretraining straight from a release."""
    config = tiny_config("gla")
    source = build(config, seed=1)
    source.save_pretrained(tmp_path / "src")
    model = build(config, seed=2)
    from torchtitan.config import job_config as tt

    from flame.checkpoint import FlameCheckpointManager

    cfg = tt.Checkpoint(enable=True, keep_latest_k=0, initial_load_path=str(tmp_path / "src"))
    manager = FlameCheckpointManager(None, [model], None, None, {}, cfg, None, base_folder=str(tmp_path / "run"))
    assert manager.load()
    assert_same_state(source.state_dict(), model.state_dict())


def test_load_hf_into(tmp_path):
    config = tiny_config("transformer")
    source = build(config, seed=1)
    source.save_pretrained(tmp_path / "src")
    model = build(config, seed=2)
    load_hf_into(model, tmp_path / "src")
    assert_same_state(source.state_dict(), model.state_dict())

    # a bf16 HF folder loads into fp32 parameters, values rounded once
    source.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    load_hf_into(model, tmp_path / "bf16")
    assert model.lm_head.weight.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, source.lm_head.weight.float())

    deeper = build(tiny_config("transformer", num_hidden_layers=3), seed=0)
    with pytest.raises(ConvertError, match=r"missing \d+ key\(s\): model\.layers\.2\."):
        load_hf_into(deeper, tmp_path / "src")
    with pytest.raises(ConvertError, match="no such HF model folder"):
        load_hf_into(model, tmp_path / "nowhere")


def test_tied_embeddings(tmp_path):
    """A tied lm_head: HF stores it once; DCP, the trainer's load, the export and load_hf_into still agree."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("transformer", tie_word_embeddings=True)
    source = build(config, seed=1)
    assert source.lm_head.weight is source.model.embeddings.weight
    source.save_pretrained(tmp_path / "src")
    hf_to_dcp(str(tmp_path / "src"), str(tmp_path / "dump" / "checkpoint" / "step-0"))
    model = build(config, seed=2)
    assert checkpoint_manager(model, tmp_path / "dump").load()
    assert_same_state(source.state_dict(), model.state_dict())
    config.save_pretrained(tmp_path / "cfg")
    exported = AutoModelForCausalLM.from_pretrained(str(dcp_to_hf(str(tmp_path / "dump"), str(tmp_path / "cfg"))))
    assert exported.lm_head.weight is exported.model.embeddings.weight
    assert_same_state(source.state_dict(), exported.state_dict())
    model = build(config, seed=3)
    load_hf_into(model, tmp_path / "src")
    assert_same_state(source.state_dict(), model.state_dict())


def test_dtype_kept_or_converted(tmp_path):
    config = tiny_config("transformer")
    source = build(config, seed=1)
    source.save_pretrained(tmp_path / "src")
    hf_to_dcp(str(tmp_path / "src"), str(tmp_path / "dump" / "checkpoint" / "step-0"), dtype="bf16")
    state = read_model_tensors(tmp_path / "dump" / "checkpoint" / "step-0")
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    model = build(config, seed=2)  # the trainer's fp32 weights take the bf16 values
    assert checkpoint_manager(model, tmp_path / "dump").load()
    assert model.lm_head.weight.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, source.lm_head.weight.to(torch.bfloat16).float())
    config.save_pretrained(tmp_path / "cfg")
    cfg = str(tmp_path / "cfg")

    from transformers import AutoModelForCausalLM

    kept = AutoModelForCausalLM.from_pretrained(str(dcp_to_hf(str(tmp_path / "dump"), cfg, out=str(tmp_path / "a"))))
    assert kept.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(kept.lm_head.weight, source.lm_head.weight.to(torch.bfloat16))
    up = dcp_to_hf(str(tmp_path / "dump"), cfg, out=str(tmp_path / "b"), dtype="fp32")
    up = AutoModelForCausalLM.from_pretrained(str(up))
    assert up.lm_head.weight.dtype == torch.float32
    assert torch.equal(up.lm_head.weight, source.lm_head.weight.to(torch.bfloat16).float())


def test_export_generates_with_tokenizer(tmp_path, sample_dir):
    """The default export folder (<dump>/hf) holds model + tokenizer; from_pretrained + generate work."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_config("gla")
    model = build(config, seed=3)
    dump = tmp_path / "dump"
    save_full_checkpoint(model, dump / "checkpoint" / "step-4", step=4)
    config.save_pretrained(tmp_path / "cfg")
    tok_dir = str(sample_dir / "tokenizer")
    code = dcp_to_hf_main(
        ["--path", str(dump), "--step", "4", "--config", str(tmp_path / "cfg"), "--tokenizer", tok_dir]
    )
    assert code == 0
    out = dump / "hf"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(out))
    lm = AutoModelForCausalLM.from_pretrained(str(out))
    assert json.loads((out / "config.json").read_text())["model_type"] == "gla"
    ids = tok("Ann has two apples", return_tensors="pt").input_ids
    gen = lm.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape == (1, ids.shape[1] + 5)
    assert isinstance(tok.decode(gen[0]), str)


# ----------------------------------------------------------------------------- errors


def test_step_selection_and_errors(tmp_path):
    config = tiny_config("transformer")
    model = build(config, seed=0)
    ckpt = tmp_path / "dump" / "checkpoint"
    save_full_checkpoint(model, ckpt / "step-2", step=2)
    save_full_checkpoint(model, ckpt / "step-4", step=4)
    (ckpt / "step-6").mkdir()  # a save killed before DCP wrote .metadata
    (ckpt / "step-6" / "__0_0.distcp").write_bytes(b"partial")

    assert step_folder(tmp_path / "dump") == ckpt / "step-4"  # latest *complete*
    assert step_folder(ckpt, 2) == ckpt / "step-2"  # the checkpoint folder itself works too
    with pytest.raises(ConvertError, match=r"step-6 is incomplete .*complete steps: 2, 4"):
        step_folder(tmp_path / "dump", 6)
    with pytest.raises(ConvertError, match=r"step-9 does not exist; complete steps: 2, 4"):
        step_folder(tmp_path / "dump", 9)
    with pytest.raises(ConvertError, match="no such folder"):
        step_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match="neither checkpoint/ nor step-N folders"):
        step_folder(tmp_path / "empty")
    (ckpt / "step-8").mkdir()  # complete on the face of it, but a garbage .metadata
    (ckpt / "step-8" / ".metadata").write_bytes(b"not a pickle")
    with pytest.raises(ConvertError, match=r"step-8: unreadable DCP metadata"):
        read_model_tensors(step_folder(tmp_path / "dump"))
    (tmp_path / "only_partial" / "checkpoint" / "step-1").mkdir(parents=True)
    with pytest.raises(ConvertError, match=r"no complete checkpoint .*incomplete \(interrupted saves\): 1"):
        step_folder(tmp_path / "only_partial")


def test_config_mismatch_lists_keys(tmp_path, capsys):
    config = tiny_config("transformer")
    save_full_checkpoint(build(config, seed=0), tmp_path / "dump" / "checkpoint" / "step-1", step=1)

    deeper = tiny_config("transformer", num_hidden_layers=3)
    deeper.save_pretrained(tmp_path / "deeper")
    with pytest.raises(ConvertError, match=r"missing 9 key\(s\): model\.layers\.2\.attn\.k_proj\.weight, .*--config"):
        dcp_to_hf(str(tmp_path / "dump"), str(tmp_path / "deeper"))

    shallower = tiny_config("transformer", num_hidden_layers=1)
    shallower.save_pretrained(tmp_path / "shallower")
    with pytest.raises(ConvertError, match=r"unexpected 9 key\(s\): model\.layers\.1\.attn\.k_proj\.weight"):
        dcp_to_hf(str(tmp_path / "dump"), str(tmp_path / "shallower"))

    other = tiny_config("gla")  # another family: GLA's gates are missing
    other.save_pretrained(tmp_path / "gla")
    with pytest.raises(ConvertError, match=r"missing 10 key\(s\): .*gk_proj"):
        dcp_to_hf(str(tmp_path / "dump"), str(tmp_path / "gla"))

    wider = tiny_config("transformer", vocab_size=VOCAB * 2)
    wider.save_pretrained(tmp_path / "wider")
    with pytest.raises(ConvertError, match=r"model\.embeddings\.weight has shape \[512, 64\] .* \[1024, 64\]"):
        dcp_to_hf(str(tmp_path / "dump"), str(tmp_path / "wider"))

    # the command line prints the same message on one line and exits 2; nothing is written
    code = dcp_to_hf_main(["--path", str(tmp_path / "dump"), "--config", str(tmp_path / "deeper")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("dcp_to_hf: ") and "missing 9 key(s)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dump" / "hf").exists()
    assert dcp_to_hf_main(["--path", str(tmp_path / "dump"), "--config", str(tmp_path / "no.json")]) == 2
    assert "no.json: no such file" in capsys.readouterr().err


def test_hf_to_dcp_errors(tmp_path, capsys):
    config = tiny_config("transformer")
    build(config, seed=0).save_pretrained(tmp_path / "src")
    target = tmp_path / "step-0"
    assert hf_to_dcp_main(["--model", str(tmp_path / "src"), "--checkpoint", str(target)]) == 0
    assert (target / ".metadata").is_file()
    assert hf_to_dcp_main(["--model", str(tmp_path / "src"), "--checkpoint", str(target)]) == 2
    assert "is not empty (pass --overwrite" in capsys.readouterr().err
    assert hf_to_dcp_main(["--model", str(tmp_path / "src"), "--checkpoint", str(target), "--overwrite"]) == 0
    (tmp_path / "not_hf").mkdir()
    with pytest.raises(ConvertError, match="not an HF model folder"):
        hf_to_dcp(str(tmp_path / "not_hf"), str(tmp_path / "x"))
    with pytest.raises(ConvertError, match="dtype 'int8'"):
        hf_to_dcp(str(tmp_path / "src"), str(tmp_path / "y"), dtype="int8")


# ----------------------------------------------------------------------------- through the trainer


def test_trainer_continues_from_hf_and_exports_bitwise(tmp_path, sample_dir):
    """HF -> hf_to_dcp (step-0) -> flame.train resumes from it -> final save -> dcp_to_hf: bitwise equal.

    The one step runs with lr 1e-30 (every update is far below a float32 ulp of the weights,
    none of which is zero), so the exported model must equal the source bit for bit; the
    step-1 loss must be the source model's loss on the first batch (not a fresh init's).
    """
    import subprocess
    import sys

    from transformers import AutoConfig, AutoModelForCausalLM

    from flame.config import FlameConfigManager
    from flame.data import build_dataloader, build_tokenizer

    config = AutoConfig.from_pretrained(str(ROOT / "configs" / "transformer_cpu.json"))
    source = build(config, seed=5)
    with torch.no_grad():
        source.lm_head.weight.mul_(20.0)  # a loss far from a fresh init's ln(vocab)
    source.save_pretrained(tmp_path / "src")
    dump = tmp_path / "dump"
    hf_to_dcp(str(tmp_path / "src"), str(dump / "checkpoint" / "step-0"))

    args = [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--job.dump_folder", str(dump),
        "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--data.dataset", str(sample_dir / "data"),
        "--training.batch_size", "2", "--training.seq_len", "32", "--training.steps", "1",
        "--optimizer.lr", "1e-30", "--optimizer.weight_decay", "0", "--metrics.log_freq", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    proc = subprocess.run(
        [sys.executable, "-m", "flame.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    row = json.loads((dump / "metrics.jsonl").read_text().splitlines()[0])

    tokenizer = build_tokenizer(str(sample_dir / "tokenizer"))
    loader = build_dataloader(
        FlameConfigManager().parse_args(args).data,
        tokenizer, dp_rank=0, dp_world_size=1, batch_size=2, seq_len=32, context_len=None, varlen=False,
    )  # fmt: skip
    batch = next(iter(loader))
    with torch.no_grad():
        expected = source(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert row["step"] == 1
    assert abs(row["loss/avg"] - expected) < 1e-4 * expected, (row["loss/avg"], expected)

    assert step_folder(dump) == dump / "checkpoint" / "step-1"  # the trainer's own final save
    out = dcp_to_hf(str(dump), str(tmp_path / "src"), tokenizer=str(sample_dir / "tokenizer"), step=1)
    assert out == dump / "hf"
    exported = AutoModelForCausalLM.from_pretrained(str(out))
    assert_same_state(source.state_dict(), exported.state_dict())


SHARDED_LOAD = """
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoConfig, AutoModelForCausalLM

import fla  # noqa: F401
from flame.convert import load_hf_into

src, out = sys.argv[1:3]
dist.init_process_group("gloo")
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
torch.manual_seed(9)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
assert isinstance(model.lm_head.weight, DTensor)
load_hf_into(model, src)
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if dist.get_rank() == 0:
    torch.save(full, out)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_load_hf_into_fsdp_sharded(tmp_path):
    """``load_hf_into`` on an FSDP2 model over 2 gloo ranks (each loads its shards): gathered, bitwise the source."""
    import socket
    import subprocess
    import sys

    config = tiny_config("gla")
    source = build(config, seed=1)
    source.save_pretrained(tmp_path / "src")
    script = tmp_path / "sharded_load.py"
    script.write_text(SHARDED_LOAD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", f"--master-port={free}",
           str(script), str(tmp_path / "src"), str(tmp_path / "full.pt")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_same_state(source.state_dict(), torch.load(tmp_path / "full.pt"))
