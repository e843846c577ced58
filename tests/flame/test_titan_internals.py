"""flame.titan_internals: each torchtitan internal flame relies on, one behaviour per test.

A torchtitan upgrade (pinned: 0.2.2) that drops or changes one of them fails here, and at trainer
start with one error naming the member (``check_private_api``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torchtitan.components.checkpoint import MODEL, CheckpointManager
from torchtitan.config import job_config as tt

from flame import titan_internals
from flame.config import JobConfig
from flame.titan_internals import CheckpointManagerBase, TorchtitanAPIError
from tests.flame.test_checkpoint import Box, one_rank  # noqa: F401 - the one-rank gloo fixture
from tests.harness import child_pythonpath

ROOT = Path(__file__).resolve().parents[2]


def test_private_api_is_there_and_a_missing_member_is_named(monkeypatch):
    titan_internals.check_private_api()
    monkeypatch.delattr(CheckpointManager, "_should_save")
    with pytest.raises(TorchtitanAPIError, match=r"CheckpointManager\._should_save is gone or changed; flame uses it"):
        titan_internals.check_private_api()


def test_importing_flame_changes_nothing_and_the_trainer_start_patches():
    code = """
import json, logging, sys, warnings
import torchtitan.tools.utils as tu, torchtitan.distributed.utils as du
def snapshot():
    log = logging.getLogger("torch.distributed.tensor._redistribute")
    dtensor = sum("DTensor" in getattr(f[1], "pattern", "") for f in warnings.filters)
    return [tu.device_type, du.device_type, dtensor, len(log.filters)]
before = snapshot()
import flame, flame.train, flame.device, flame.parallelize, flame.checkpoint, flame.metrics, flame.model  # noqa
imported = snapshot()
flame.train.start_up()
flame.train.start_up()
started = snapshot()
print(json.dumps([before, imported, started, flame.device.DEVICE_TYPE]))
"""
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONWARNINGS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    before, imported, started, device_type = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == before, "importing flame must not patch torchtitan, warnings or loggers"
    assert started[:2] == [device_type, device_type]
    assert started[2] == before[2] + (device_type == "cpu"), "DTensor's CPU warning is silenced on CPU only"
    assert started[3] == before[3] + 1, "the log filter is installed once (start_up is idempotent)"


# ----------------------------------------------------------------------------- checkpoint manager


class Recording(CheckpointManagerBase):
    def find_load_step(self, folder: str = "") -> int:
        self.asked = folder
        return -1

    def after_last_save(self, step: int) -> None:
        self.last_saved = step


def manager(dump: Path, cls=CheckpointManagerBase, **checkpoint) -> CheckpointManagerBase:
    job = JobConfig()
    job.checkpoint.enable = True
    for key, value in checkpoint.items():
        setattr(job.checkpoint, key, value)
    return cls(
        dataloader=Box(pos=0),
        model_parts=[nn.Linear(3, 2)],
        optimizers=Box(moment=0),
        lr_schedulers=Box(last=0),
        states={"train_state": Box(step=0)},
        checkpoint_config=job.checkpoint,
        sd_adapter=None,
        base_folder=str(dump),
    )


def test_checkpoint_path_and_saving_policy(one_rank, tmp_path):  # noqa: F811
    m = manager(tmp_path, interval=3)
    assert m.checkpoint_path(7) == str(tmp_path / "checkpoint" / "step-7")
    assert [s for s in range(1, 10) if m.should_save(s)] == [3, 6, 9]
    assert m.should_save(4, last_step=True)
    m.close()


def test_states_to_load_and_model_state_refresh(one_rank, tmp_path):  # noqa: F811
    m = manager(tmp_path, exclude_from_loading=["dataloader"])
    # the model's entries at the top level (HF names), the other states under their group name
    assert set(m.states_to_load(model_only=True)) == {"weight", "bias"}
    assert set(m.states_to_load(model_only=False)) == {"weight", "bias", "optimizer", "lr_scheduler", "train_state"}
    (part,) = m.model_parts()
    with torch.no_grad():
        part.weight.fill_(3.0)
    m.refresh_model_state()
    assert torch.equal(m.states[MODEL].state_dict()["weight"], torch.full((2, 3), 3.0))
    m.close()


def test_hooks_reach_torchtitans_load_and_final_save(one_rank, tmp_path):  # noqa: F811
    m = manager(tmp_path, cls=Recording, interval=5, last_save_model_only=True)
    m.save(2, last_step=True)
    assert m.last_saved == 2 and Path(m.checkpoint_path(2), ".metadata").exists()
    assert CheckpointManager.load(m, step=-1) is False and m.asked == ""  # torchtitan's load asks our hook
    m.wait_for_async_save()  # nothing pending: a no-op
    m.close()


# ----------------------------------------------------------------------------- AC and meshes


def block() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 8))


@pytest.mark.parametrize("wrap", [titan_internals.apply_full_ac, titan_internals.apply_op_sac], ids=["full", "op"])
def test_activation_checkpointing_keeps_outputs_and_grads(wrap):
    config = tt.ActivationCheckpoint(mode="full" if wrap is titan_internals.apply_full_ac else "selective")
    plain, wrapped = block(), wrap(block(), config)
    assert wrapped is not plain and type(wrapped) is not nn.Sequential
    x = torch.randn(4, 8)
    for model in (plain, wrapped):
        model(x).square().sum().backward()
    assert torch.equal(plain(x), wrapped(x))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(plain.parameters(), wrapped.parameters()))


def test_dense_mesh_keeps_size_one_dims(one_rank):  # noqa: F811
    from torchtitan.distributed import ParallelDims

    from flame.train import start_up

    start_up()
    pd = ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=1, pp=1, ep=1, etp=1, world_size=dist.get_world_size())
    pd.world_mesh  # noqa: B018 - builds the meshes
    mesh = titan_internals.dense_mesh(pd)
    assert mesh.mesh_dim_names == ("pp", "dp_replicate", "fsdp", "tp") and mesh["fsdp"].size() == 1
    with pytest.raises(TorchtitanAPIError, match=r"ParallelDims\._global_meshes\[\"dense\"\] is gone"):
        titan_internals.dense_mesh(object())
