"""flame's seeded init (flame.model.init_weights) on sharded parameters, for every model family.

FSDP leaves every parameter a DTensor before the init runs; a family whose init sets a submodule's parameter
from the parent (a layer's reset_parameters, or the model's _init_weights for a layer, writing a child Linear's
bias) crashed there ("mixed torch.Tensor and DTensor") before flame lent such parameters as full tensors.
"""

import json
import os
import subprocess
import sys

from tests.fla.models.families import FAMILIES
from tests.flame.test_train import free_port
from tests.harness import child_pythonpath


def run_worker(families: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "MASTER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "tests.flame.init_worker", *families], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_init_on_dtensor_parameters_equals_plain_init():
    """Every family and variant of the conformance suite (about 15 s)."""
    results = run_worker([])
    assert {name.split("/")[0] for name in results} == {f.model_type for f in FAMILIES}
    bad = {name: outcome for name, outcome in results.items() if outcome != "ok"}
    assert not bad, bad
