"""``FLA_TEST_ONE_CONFIG``: the GPU test runs compile one autotune config per key, taking them in turn."""

import os

import triton
import triton.language as tl
from triton.runtime.autotuner import Autotuner

from tests.harness import one_config_per_key


@triton.jit
def _copy_kernel(x, y, N, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(y + o, tl.load(x + o, mask=o < N), mask=o < N)


def _autotuned(configs, prune=None):
    kernel = triton.autotune(configs=configs, key=["N"], prune_configs_by=prune)(_copy_kernel)
    assert isinstance(kernel, Autotuner)
    kernel.nargs = {}  # what Autotuner.run sets before it prunes
    return kernel


def test_each_new_key_gets_the_next_config_after_pruning():
    class TurnTaking(Autotuner):
        pass

    one_config_per_key(TurnTaking)
    configs = [triton.Config({"BLOCK": b}, num_warps=w) for b in (16, 32, 64) for w in (2, 4)]
    wide_only = {"early_config_prune": lambda cs, nargs, **kw: [c for c in cs if c.kwargs["BLOCK"] >= 32]}
    kernel = _autotuned(configs, wide_only)
    kernel.__class__ = TurnTaking
    picked = [kernel.prune_configs({}) for _ in range(5)]
    # the pruning still applies (no BLOCK=16), then the four survivors in turn
    assert [p[0].kwargs["BLOCK"] for p in picked] == [32, 32, 64, 64, 32]
    assert [p[0].num_warps for p in picked] == [2, 4, 2, 4, 2]
    # each turn but the first survivor's comes with that survivor as the fallback (a turn may not fit the GPU)
    assert [len(p) for p in picked] == [1, 2, 2, 2, 1]
    assert all(p[-1] is picked[0][0] for p in picked)
    # other autotuners keep all their configs, unless this run set FLA_TEST_ONE_CONFIG=1 (then a turn + fallback)
    expected = (1, 2) if os.environ.get("FLA_TEST_ONE_CONFIG") == "1" else (6,)
    assert len(_autotuned(configs).prune_configs({})) in expected


def test_the_environment_switch_patches_every_autotuner_in_a_test_run():
    # the conftest applies the patch when FLA_TEST_ONE_CONFIG=1: run this file's first test in a child pytest
    # with the switch on (its last assertion then expects every autotuner to keep one config)
    import subprocess
    import sys
    from pathlib import Path

    from tests.harness import child_pythonpath

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FLA_TEST_ONE_CONFIG": "1", "PYTHONPATH": child_pythonpath()}
    env.pop("PYTEST_XDIST_WORKER", None)
    test = f"{Path(__file__).relative_to(root)}::test_each_new_key_gets_the_next_config_after_pruning"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=", test],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
