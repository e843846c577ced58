"""fla tests build their tensors and modules on ``tests.harness.DEVICE``: CUDA on the GPU
machine (where the same tests then exercise the compiled Triton kernels), CPU elsewhere.
Tests that need another device say so explicitly."""

import pytest
import torch

from tests.harness import DEVICE


@pytest.fixture(autouse=True)
def _default_device():
    with torch.device(DEVICE):
        yield
