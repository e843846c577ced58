"""Each op's fwd+bwd under every autotune config of every autotuned kernel it launches, one kernel and config at a
time (:mod:`tests.fla.config_sweep`): finite outputs and gradients, within bf16 rounding of the autotuned run.

The GPU runs of the rest of the suite compile one config per autotune key, in turn; a config that only some
builds get wrong slips through them (the WY backward's 4-warp, 3-stage build on Hopper with triton 3.6).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fla.ops.common.tuning import autotuner_of
from fla.ops.delta_rule import chunk_delta_rule
from fla.ops.gated_delta_rule import chunk_gated_delta_rule
from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule
from fla.ops.gla import chunk_gla
from fla.ops.kda import chunk_kda
from fla.ops.simple_gla import chunk_simple_gla
from tests.fla.config_sweep import kernel_name, sweep_configs, tuners_launched
from tests.harness import DEVICE, assert_close, tol, using


def _leaves(dtype, **tensors):
    return {name: t.to(dtype).requires_grad_() for name, t in tensors.items()}


def _delta(B, T, H, K, V, dtype, gate: str | None):
    """q, k, v, [g,] beta of a delta-rule op (gate: None, "scalar" [B, T, H] or "vector" [B, T, H, K])."""
    r = lambda *s: torch.randn(*s, device=DEVICE)  # noqa: E731
    g = {"scalar": (B, T, H), "vector": (B, T, H, K)}.get(gate)
    gates = {} if g is None else {"g": F.logsigmoid(r(*g))}
    return _leaves(dtype, q=r(B, T, H, K), k=r(B, T, H, K), v=r(B, T, H, V), **gates, beta=torch.sigmoid(r(B, T, H)))


def _gla(B, T, H, K, V, dtype, scalar: bool):
    r = lambda *s: torch.randn(*s, device=DEVICE)  # noqa: E731
    g = F.logsigmoid(r(B, T, H)) if scalar else F.logsigmoid(r(B, T, H, K)) / 16
    return _leaves(dtype, q=r(B, T, H, K), k=r(B, T, H, K), v=r(B, T, H, V), g=g)


def _dplr(B, T, H, K, V, dtype):
    r = lambda *s: torch.randn(*s, device=DEVICE)  # noqa: E731
    kk = F.normalize(r(B, T, H, K), dim=-1)
    rate, decay = torch.rand(B, T, H, K, device=DEVICE), -0.6 * torch.rand(B, T, H, K, device=DEVICE)
    return _leaves(dtype, q=r(B, T, H, K), k=r(B, T, H, K), v=r(B, T, H, V), a=-kk, b=kk * rate, gk=decay)


OPS = {
    # op, leaves(B, T, H, K, V, dtype), keywords
    "gated_delta_rule": (chunk_gated_delta_rule, lambda *a: _delta(*a, "scalar"), {"use_qk_l2norm_in_kernel": True}),
    "delta_rule": (chunk_delta_rule, lambda *a: _delta(*a, None), {"use_qk_l2norm_in_kernel": True}),
    "kda": (chunk_kda, lambda *a: _delta(*a, "vector"), {"use_qk_l2norm_in_kernel": True}),
    "gla": (chunk_gla, lambda *a: _gla(*a, scalar=False), {}),
    "simple_gla": (chunk_simple_gla, lambda *a: _gla(*a, scalar=True), {}),
    "dplr (rwkv7)": (chunk_dplr_delta_rule, _dplr, {}),
}


def _run(name, shape, dtype):
    op, make, kw = OPS[name]
    leaves = make(*shape, dtype)
    names, tensors = list(leaves), list(leaves.values())
    do = torch.randn(*shape[:3], shape[4], device=DEVICE, dtype=dtype)

    def run():
        with using("triton"):  # the CPU test's tensors would take the PyTorch path
            o, _ = op(*tensors, **kw)
            return [o, *torch.autograd.grad(o, tensors, do)]

    return run, ["o", *(f"d{n}" for n in names)]


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(OPS))
def test_every_config_gpu(name):
    # the 340M layers' shapes: 6 heads of K = 128, V = 256 for the delta rules, 8 x 128 for GLA / KDA, 16 x 64 RWKV7
    shape = {"gated_delta_rule": (2, 2048, 6, 128, 256), "delta_rule": (2, 2048, 6, 128, 256),
             "dplr (rwkv7)": (2, 2048, 16, 64, 64)}.get(name, (2, 2048, 8, 128, 128))  # fmt: skip
    run, labels = _run(name, shape, torch.bfloat16)

    def check(label, ref, out):
        index = int(label.rsplit(" ", 1)[1])
        assert_close(f"{name}: {label.rsplit(' output', 1)[0]} {labels[index]}", ref.float(), out.float(),
                     tol(torch.bfloat16))  # fmt: skip

    ran, skipped = sweep_configs(run, check)
    assert ran, f"{name}: no autotuned kernel launched"
    print(f"{name}: {len(ran)} kernel configs ran, {len(skipped)} do not fit this device: {skipped}")


def test_sweep_finds_the_kernels_and_runs_each_config():
    """On the CPU (interpreter: one config per kernel) the sweep finds the gated delta rule's autotuned kernels,
    the WY backward among them, and reruns the op once per kernel config with the same results."""
    import fla.ops.common.wy_bwd as wy_bwd

    run, labels = _run("gated_delta_rule", (1, 40, 2, 16, 24), torch.float32)
    tuners = tuners_launched(run)
    assert autotuner_of(wy_bwd.chunk_delta_wy_bwd_kernel) in tuners
    checked = []

    def check(label, ref, out):
        assert_close(label, ref, out, tol(torch.float32))
        checked.append(label)

    ran, skipped = sweep_configs(run, check)
    assert not skipped and len(ran) == sum(len(t.configs) for t in tuners) >= 3
    assert "chunk_delta_wy_bwd_kernel" in {kernel_name(t) for t in tuners}
    assert len(checked) == len(ran) * len(labels)
