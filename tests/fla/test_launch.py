"""fla.utils.launch: the cached (lean) Triton launch path gives exactly triton's own results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fla.utils.launch import _Entry, lean_kernels, lean_launch, lean_launch_disabled, lean_launch_enabled
from tests.harness import child_pythonpath

# Imports every module that defines kernels (without the interpreter: real JITFunctions), then checks that each
# launched kernel is wrapped and that no heuristic reads more than the launch signature holds (`is None` tests
# and scalar values): a tensor argument is a poison object whose attributes raise.
_WRAP_CHECK = r"""
import importlib, json, pkgutil, re, pathlib
import fla
from fla.utils.launch import LeanKernel
from triton.runtime.autotuner import Autotuner, Heuristics
from triton.runtime.jit import JITFunction

class Poison:
    def __getattr__(self, name):
        raise AssertionError(f"reads .{name} of a tensor argument")
    def __gt__(self, other): return True
    def __lt__(self, other): return True
    def __ge__(self, other): return True
    def __le__(self, other): return True

launched = set()
for path in pathlib.Path(fla.__file__).parent.rglob("*.py"):
    launched |= set(re.findall(r"(\w+_kernel)\[", path.read_text()))
found, problems = {}, []
for info in pkgutil.walk_packages(fla.__path__, "fla."):
    module = importlib.import_module(info.name)
    for name, obj in vars(module).items():
        if isinstance(obj, LeanKernel):
            found[name] = obj
        elif name in launched and isinstance(obj, (JITFunction, Autotuner, Heuristics)):
            problems.append(f"{info.name}.{name} is launched but not wrapped by lean_launch")
for name, k in found.items():
    for node in k.chain:
        if isinstance(node, Heuristics):
            for flag, heuristic in node.values.items():
                try:
                    heuristic({a: Poison() for a in k.arg_names})
                except AssertionError as e:
                    problems.append(f"{name}: heuristic {flag} {e}")
print(json.dumps({"wrapped": sorted(found), "launched": sorted(launched), "problems": problems}))
"""


def test_every_launched_kernel_is_wrapped_and_its_heuristics_read_only_the_signature():
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": child_pythonpath()}
    done = subprocess.run([sys.executable, "-c", _WRAP_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["problems"] == []
    assert set(result["launched"]) <= set(result["wrapped"])
    assert len(result["wrapped"]) >= 30


# Record / replay of LeanKernel against the installed triton's own binder, without a GPU: the "triton path"
# is a stand-in that applies the decorators and binds like JITFunction.run, then launches a fake compiled
# kernel that logs (grid, arguments); a cached launch must log exactly what the triton path logged.
_REPLAY_CHECK = r"""
import torch
import fla.utils.launch as L
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import make_backend
from triton.runtime.autotuner import Autotuner, Heuristics
from triton.runtime.jit import create_function_from_signature
from fla.modules.conv import causal_conv1d_fwd_kernel
from fla.ops.common.l2norm import l2norm_fwd_kernel

backend = make_backend(GPUTarget("cuda", 90, 32))
L._current_device = lambda: 0
L._current_stream = lambda device: 7

class FakeCompiled:
    packed_metadata, function = "meta", "fn"
    def __init__(self): self.log = []
    def run(self, g0, g1, g2, stream, function, meta, launch_metadata, enter, exit, *values):
        assert (stream, function, meta) == (7, "fn", "meta")
        self.log.append(((g0, g1, g2), values))

def check(k, calls):
    binder = create_function_from_signature(k.jit.signature, k.jit.params, backend)
    k._binder = lambda: binder
    compiled, slow = FakeCompiled(), []

    class TritonPath:  # what triton does: heuristics, the autotuner's (last) config, bind, launch
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                slow.append(1)
                named, kw = dict(zip(k.arg_names, args)), dict(kwargs)
                for node in k.chain:
                    if isinstance(node, Heuristics):
                        for flag, h in node.values.items():
                            kw[flag] = h({**named, **kw})
                    elif isinstance(node, Autotuner):
                        node.best_config = node.configs[-1]
                        kw.update(node.best_config.all_kwargs())
                bound, _, _ = binder(*args, **kw)
                g = grid(bound) if callable(grid) else grid
                compiled.run(*g, *(1,) * (3 - len(g)), 7, "fn", "meta", None, None, None, *bound.values())
                return compiled
            return run

    k.kernel, k._lean = TritonPath(), True
    for grid, args, kwargs in calls:
        k[grid](*args, **kwargs)  # recorded through the triton path
        k[grid](*args, **kwargs)  # cached
        first, second = compiled.log[-2:]
        assert first[0] == second[0], (k, first[0], second[0])
        assert len(first[1]) == len(second[1]) and all(a is b or a == b for a, b in zip(first[1], second[1])), k
    assert len(slow) == len(calls) and k.lean_launches == len(calls), (k, len(slow), k.lean_launches)
    held = [v for e in k._entries.values() if e is not L._TRITON_PATH for v in e.template if torch.is_tensor(v)]
    assert not held, f"{k} keeps {len(held)} tensors of its recording calls alive"

x, w, y = torch.randn(2, 10, 8), torch.randn(8, 4), torch.randn(2, 10, 8)
grid = lambda meta: (-(-meta["D"] // meta["BD"]), 3, 2)
conv = [(grid, (x, w, b, None, None, y, None, None, T, 8), dict(W=4, BT=16, USE_SILU=silu))
        for b in (None, torch.randn(8)) for T in (10, 11) for silu in (True, False)]
check(causal_conv1d_fwd_kernel, conv)
r = torch.randn(20)
check(l2norm_fwd_kernel, [((5,), (x, y, r, 1e-6, N), dict(D=8, BR=4, BD=16)) for N in (20, 17)])

# a launch option among the keywords: triton's path at every call, the decorators replayed only once
k = l2norm_fwd_kernel
recorded, record = [], k._record
k._record = lambda *a: (recorded.append(1), record(*a))
before = k.lean_launches
for _ in range(3):
    k[(5,)](x, y, r, 1e-6, 20, D=8, BR=4, BD=16, num_warps=2)
assert len(recorded) == 1 and k.lean_launches == before, (len(recorded), k.lean_launches)
print("OK")
"""


def test_cached_launch_replays_the_triton_path_exactly():
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": child_pythonpath()}
    done = subprocess.run([sys.executable, "-c", _REPLAY_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_interpreter_gets_the_kernel_unchanged():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("this process runs compiled Triton (GPU): covered by the gpu tests below")
    marker = object()
    assert lean_launch(marker) is marker
    assert not lean_launch_enabled()


# ----------------------------------------------------------------------------------------------- GPU


def _run_ops(T: int, offset: int = 0) -> dict[str, torch.Tensor]:
    """chunk_gla, chunk_gated_delta_rule, short conv and RMSNorm fwd+bwd on fixed random inputs."""
    from fla.modules.conv import causal_conv1d
    from fla.modules.norm import rms_norm
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    from fla.ops.gla import chunk_gla

    g = torch.Generator(device="cuda").manual_seed(T + offset)
    B, H, D = 2, 4, 64

    def rand(*shape, dtype=torch.bfloat16):
        # `offset` extra elements in front: a view whose data pointer is not 16-byte aligned
        flat = torch.randn(offset + torch.Size(shape).numel(), device="cuda", generator=g, dtype=torch.float32)
        return flat.to(dtype)[offset:].view(shape).requires_grad_()

    q, k, v = rand(B, T, H, D), rand(B, T, H, D), rand(B, T, H, D)
    gk = F.logsigmoid(rand(B, T, H, D, dtype=torch.float32)).detach().requires_grad_()
    out = {}
    o, _ = chunk_gla(q, k, v, gk)
    o.float().square().sum().backward()
    out |= {"gla_o": o, "gla_dq": q.grad, "gla_dk": k.grad, "gla_dv": v.grad, "gla_dg": gk.grad}
    q2, k2, v2 = rand(B, T, H, D), rand(B, T, H, D), rand(B, T, H, D)
    gs = F.logsigmoid(rand(B, T, H, dtype=torch.float32)).detach().requires_grad_()
    beta = torch.sigmoid(rand(B, T, H, dtype=torch.float32)).detach().requires_grad_()
    o2, _ = chunk_gated_delta_rule(q2, k2, v2, gs, beta, use_qk_l2norm_in_kernel=True)
    o2.float().square().sum().backward()
    out |= {"gdn_o": o2, "gdn_dq": q2.grad, "gdn_dk": k2.grad, "gdn_dg": gs.grad, "gdn_db": beta.grad}
    x, w = rand(B, T, 96), rand(96, 4)
    y, _ = causal_conv1d(x, w, activation="silu")
    y.float().square().sum().backward()
    out |= {"conv_y": y, "conv_dx": x.grad, "conv_dw": w.grad}
    xn, wn = rand(B * T, 192), rand(192)
    yn = rms_norm(xn, wn, None)
    yn.float().square().sum().backward()
    out |= {"norm_y": yn, "norm_dx": xn.grad, "norm_dw": wn.grad}
    return {name: t.detach().clone() for name, t in out.items()}


@pytest.mark.gpu
def test_lean_launches_match_triton_launches_bitwise():
    if not lean_launch_enabled():
        pytest.fail(f"lean launches are off on this GPU setup (FLA_LEAN_LAUNCH={os.environ.get('FLA_LEAN_LAUNCH')})")
    for T, offset in ((200, 0), (333, 0), (200, 1)):  # odd lengths; offset 1: misaligned bf16 pointers
        with lean_launch_disabled():
            ref = _run_ops(T, offset)
        before = sum(k.lean_launches for k in lean_kernels())
        first = _run_ops(T, offset)  # new signatures are recorded (and launched by triton)
        second = _run_ops(T, offset)  # now launched from the cache
        lean = sum(k.lean_launches for k in lean_kernels()) - before
        entries = [e for k in lean_kernels() for e in k._entries.values() if isinstance(e, _Entry)]
        assert not [v for e in entries for v in e.template if torch.is_tensor(v)]
        assert lean >= 20, f"T={T} offset={offset}: only {lean} cached launches"
        for name in ref:
            assert torch.equal(ref[name], first[name]), f"{name} (T={T}, offset={offset}, recording call)"
            assert torch.equal(ref[name], second[name]), f"{name} (T={T}, offset={offset}, cached launch)"


@pytest.mark.gpu
def test_lean_launch_follows_the_current_stream():
    from fla.ops.gla import chunk_gla

    q, k, v = (torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = F.logsigmoid(torch.randn(1, 128, 2, 64, device="cuda"))
    ref, _ = chunk_gla(q, k, v, g)
    chunk_gla(q, k, v, g)  # warm the cache
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out, _ = chunk_gla(q, k, v, g)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(ref, out)


def test_bad_lean_launch_switch_is_an_error_at_import():
    env = {**os.environ, "FLA_LEAN_LAUNCH": "off", "PYTHONPATH": child_pythonpath()}
    run = subprocess.run([sys.executable, "-c", "import fla.utils.launch"], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "FLA_LEAN_LAUNCH='off': expected 0 or 1" in run.stderr, run.stderr[-2000:]
