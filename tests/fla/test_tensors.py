"""fla.utils.tensors guards: the error names the argument, shapes and devices; passing inputs pass."""

from __future__ import annotations

import pytest
import torch

from fla.utils import check_same_device, check_shape, contiguous


def test_check_shape_accepts_wildcards_and_names_the_mismatch():
    t = torch.empty(2, 3, 4)
    check_shape("x", t, (2, None, 4))
    for expected in ((2, 3), (2, 3, 5), (2, 3, 4, 1)):
        with pytest.raises(ValueError, match=r"x has shape \[2, 3, 4\], expected \["):
            check_shape("x", t, expected, "[B, T, D]")


def test_check_same_device_names_every_tensor_when_devices_differ():
    cpu = torch.empty(1)
    check_same_device(a=cpu, b=None, c=torch.empty(2))
    meta = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match=r"inputs are on different devices: a on cpu, c on meta"):
        check_same_device(a=cpu, b=None, c=meta)


def test_contiguous_decorator_makes_positional_and_keyword_tensors_contiguous():
    @contiguous
    def f(x, *, y=None, n=3):
        return x.is_contiguous(), y.is_contiguous(), n

    t = torch.randn(4, 6).t()
    assert f(t, y=t, n=5) == (True, True, 5)
