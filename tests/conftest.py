"""Session set-up shared by every test.

* Without a CUDA device, ``TRITON_INTERPRET=1`` is set here, before any test module
  imports ``fla`` (Triton reads it when kernels are decorated), so the Triton kernels run
  on CPU tensors through the interpreter when a test forces the ``triton`` backend.
* ``gpu`` tests are skipped without CUDA, and ``slow`` tests without ``--run-slow``; both
  with a reason line (``-rs`` in the pytest options prints it).
* Every test runs with output poisoning on: kernel outputs start as NaN.
* ``FLA_TEST_ONE_CONFIG=1`` (the GPU scripts set it): each Triton autotuner compiles one of its configs per
  key, in turn, instead of all of them (:func:`tests.harness.one_config_per_key`).
* Each pytest-xdist worker's torch gets its share of the cores (``OMP_NUM_THREADS``, inherited by the processes a
  test starts), unless the environment sets it.
* On CUDA, each test gives its cached GPU memory back when it ends: the GPU scripts run 8 pytest workers on one
  GPU, and a worker's allocator cache from a long-sequence test starved the others (CUDA out of memory, H100).
"""

import os

# pytest-xdist workers share the machine's cores. Uncapped, each worker's torch (and every process a test starts,
# which inherits the environment) runs one OpenMP thread per core, and the oversubscribed threads' spin-waits made
# the suite ~30% slower on the 2-core CI machine (734 s -> 516 s with one thread per worker). Workers only (the
# controller runs no tests, and its environment would reach the workers); an explicit OMP_NUM_THREADS wins.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" not in os.environ and _WORKERS > 0:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))

import torch  # noqa: E402

if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fla.utils import poison_outputs  # noqa: E402

if os.environ.get("FLA_TEST_ONE_CONFIG") == "1":
    from triton.runtime.autotuner import Autotuner

    from tests.harness import one_config_per_key

    one_config_per_key(Autotuner)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--run-slow")
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: no CUDA device here; runs on the GPU machine"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))


@pytest.fixture(autouse=True)
def _poison_kernel_outputs():
    with poison_outputs(True):
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _release_cuda_cache():
    yield
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def pytest_runtest_logreport(report):
    """With ``FLAME_FAILURE_LOG=<file>``, append each failure's traceback as it happens (with xdist
    too): a run cut off by a time limit (the GPU machine's) still leaves its failures readable."""
    path = os.environ.get("FLAME_FAILURE_LOG")
    if path and report.failed:
        with open(path, "a") as f:
            f.write(f"===== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
