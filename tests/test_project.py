"""Project-level checks: CI runs the README's commands; utils guards and the harness itself."""

import re
from pathlib import Path

import pytest
import torch

from fla.ops.utils import prepare_chunk_indices, prepare_chunk_offsets, prepare_position_ids, prepare_sequence_ids
from fla.utils import (
    IS_TRITON_INTERPRET,
    check_cu_seqlens,
    check_dtype,
    check_same_device,
    check_shape,
    empty,
    force_backend,
    poison_outputs,
    select_backend,
)
from tests.harness import assert_close, rel_error

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no '## Set-up' bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_readme_install_and_test_commands():
    commands = _readme_setup_commands()
    assert len(commands) == 3, f"README set-up must be install, main job, tests; got {commands}"
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, test = commands
    assert install in ci, f"'{install}' (README install) is not in .ci/run"
    assert re.search(rf"^(timeout \S+ )?{re.escape(test)}$", ci, re.M), f"'{test}' (README tests) is not in .ci/run"


def test_dispatch_rule_cpu_and_forced():
    x = torch.randn(3)
    assert select_backend(x) == "torch"
    assert select_backend(None, x) == "torch"
    with force_backend("triton"):
        if IS_TRITON_INTERPRET:  # the CPU test session turns the interpreter on
            assert select_backend(x) == "triton"
        else:  # on a GPU machine, Triton cannot take CPU tensors
            with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 was not set"):
                select_backend(x)
    with force_backend("torch"):
        assert select_backend(x) == "torch"
    with pytest.raises(ValueError, match="backend 'cuda' is not one of"):
        with force_backend("cuda"):
            pass


def test_guards_name_the_argument():
    with pytest.raises(ValueError, match=r"q has shape \[2, 3\], expected \[2, \*, 4\] \[B, T, H\]"):
        check_shape("q", torch.zeros(2, 3), (2, None, 4), "[B, T, H]")
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        check_dtype("x", torch.zeros(2, dtype=torch.long))
    check_same_device(a=torch.zeros(1), b=None, c=torch.zeros(1))
    with pytest.raises(ValueError, match="batch size must be 1"):
        check_cu_seqlens(torch.tensor([0, 4]), total=4, batch=2)
    with pytest.raises(ValueError, match="end at the token count 5"):
        check_cu_seqlens(torch.tensor([0, 4], dtype=torch.int32), total=5, batch=1)
    with pytest.raises(TypeError, match="cu_seqlens has dtype torch.float32"):
        check_cu_seqlens(torch.tensor([0.0, 4.0]), total=4, batch=1)


def test_poisoned_allocation():
    with poison_outputs(True):
        assert torch.isnan(empty(4, dtype=torch.float32, device="cpu")).all()
        assert (empty(4, dtype=torch.int32, device="cpu") == -1).all()


def test_varlen_index_helpers():
    cu = torch.tensor([0, 1, 5, 5, 12], dtype=torch.int32)
    assert prepare_position_ids(cu).tolist() == [0, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6]
    assert prepare_sequence_ids(cu).tolist() == [0, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3]
    assert prepare_chunk_indices(cu, 4).tolist() == [[0, 0], [1, 0], [3, 0], [3, 1]]
    assert prepare_chunk_offsets(cu, 4).tolist() == [0, 1, 2, 2, 4]


def test_harness_catches_nan_and_error():
    ref = torch.randn(10)
    out = ref.clone()
    assert_close("same", ref, out, 0.0)
    out[3] = float("nan")
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", ref, out, 1.0)
    with pytest.raises(AssertionError, match="relative error"):
        assert_close("off", ref, ref * 1.1, 1e-3)
    assert abs(rel_error(ref.double(), ref.double() * 1.1) - 0.1) < 1e-9


def test_host_sizes_match_triton():
    import triton

    from fla.utils import cdiv, next_power_of_2

    for a in range(0, 300):
        for b in (1, 3, 16, 64):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
    for n in range(1, 5000):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
