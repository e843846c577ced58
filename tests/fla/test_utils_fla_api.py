"""fla 0.6.0's ``fla.utils`` names for code built on its ops (``fla/utils/fla_api.py``): present under fla's names,
behaving as fla documents them."""

from __future__ import annotations

import os

import pytest
import torch

import fla.utils as utils


def test_every_name_is_reachable_from_fla_utils():
    from fla.utils import fla_api

    for name in fla_api.__all__:
        assert getattr(utils, name) is getattr(fla_api, name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        utils.no_such_name  # noqa: B018


def test_device_facts_match_this_machine():
    cuda = torch.cuda.is_available()
    assert utils.device_platform == (("hip" if torch.version.hip else "cuda") if cuda else utils.device_platform)
    assert utils.device in ("cuda", "xpu") and utils.device_torch_lib is getattr(torch, utils.device)
    assert utils.IS_NVIDIA == (cuda and not torch.version.hip) and utils.is_nvidia == utils.IS_NVIDIA
    if not cuda:
        assert not (utils.IS_NVIDIA_HOPPER or utils.IS_TF32_SUPPORTED or utils.check_shared_mem("hopper"))
        assert utils.get_multiprocessor_count() == 1
    else:
        major = torch.cuda.get_device_capability(0)[0]
        assert utils.IS_NVIDIA_HOPPER == (utils.IS_NVIDIA and major == 9)
        assert utils.get_multiprocessor_count() == torch.cuda.get_device_properties(0).multi_processor_count
    import triton

    have = tuple(int(x) for x in triton.__version__.split(".")[:2])
    assert utils.TRITON_ABOVE_3_4_0 == (have >= (3, 4))


def test_input_guard_makes_tensors_contiguous_unless_exempt():
    seen = {}

    @utils.input_guard
    def f(x, y, scale=1.0):
        seen.update(x=x.is_contiguous(), y=y.is_contiguous())
        return x * scale

    a = torch.randn(4, 6).t()
    assert not a.is_contiguous()
    torch.testing.assert_close(f(a, y=a, scale=2.0), a * 2)
    assert seen == {"x": True, "y": True}

    @utils.input_guard(no_guard_contiguous=["y"])
    def g(x, y):
        return x.is_contiguous(), y.is_contiguous()

    assert g(a, a) == (True, False)
    assert utils.input_guard(no_guard_contiguous=True)(g.__wrapped__)(a, a) == (False, False)


def test_tensor_cache_returns_the_result_for_the_same_objects(monkeypatch):
    calls = []

    @utils.tensor_cache
    def lens(cu_seqlens):
        calls.append(cu_seqlens)
        return cu_seqlens[1:] - cu_seqlens[:-1]

    cu = torch.tensor([0, 3, 7])
    first = lens(cu)
    assert lens(cu) is first and len(calls) == 1
    assert torch.equal(lens(cu.clone()), first) and len(calls) == 2  # an equal but other tensor: a new call
    monkeypatch.setenv("FLA_DISABLE_TENSOR_CACHE", "1")
    assert lens(cu) is not first and len(calls) == 3
    assert os.environ["FLA_DISABLE_TENSOR_CACHE"] == "1"
    monkeypatch.setenv("FLA_DISABLE_TENSOR_CACHE", "yes")
    with pytest.raises(ValueError, match="FLA_DISABLE_TENSOR_CACHE='yes': expected 0 or 1"):
        lens(cu)


def test_autocast_decorators_and_checkpoint():
    class Scale(torch.autograd.Function):
        @staticmethod
        @utils.autocast_custom_fwd
        def forward(ctx, x):
            return x * 2

        @staticmethod
        @utils.autocast_custom_bwd
        def backward(ctx, dy):
            return dy * 2

    x = torch.randn(3, requires_grad=True)
    Scale.apply(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0))

    @utils.checkpoint
    def block(x):
        return (x * x).sin()

    y = torch.randn(5, requires_grad=True)
    block(y).sum().backward()
    torch.testing.assert_close(y.grad, 2 * y.detach() * (y.detach() ** 2).cos())


def test_assert_close_uses_the_rms_error_ratio():
    ref = torch.ones(100)
    utils.assert_close("same", ref, ref.clone(), 1e-6)
    near = ref + 1e-3
    assert utils.get_err_ratio(ref, near) == pytest.approx(1e-3, rel=1e-3)
    assert utils.get_abs_err(ref, near) == pytest.approx(1e-3, rel=1e-3)
    utils.assert_close("near", ref, near, 2e-3)
    with pytest.raises(AssertionError, match="far"):
        utils.assert_close("far", ref, ref + 0.1, 1e-2)
    with pytest.raises(AssertionError, match="NaN"):
        utils.assert_close("nan", ref, torch.full((100,), float("nan")), 1.0)
    with pytest.warns(UserWarning, match="warned"):
        utils.assert_close("warned", ref, ref + 0.1, 1e-2, warning=True)
