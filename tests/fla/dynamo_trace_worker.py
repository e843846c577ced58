"""Child process of ``tests/fla/test_launch_under_compile.py``: dynamo traces Triton-path ops as flame's
``torch.compile`` does on a GPU, on a machine without one, and prints one line per case.

Outside the interpreter (TRITON_INTERPRET unset), with the ops forced onto their Triton path and dynamo told that
triton is usable (``has_triton`` is False without a GPU, and dynamo then treats kernels as plain Python), tracing
goes as on an H100: each kernel launch becomes a ``triton_kernel_wrapper_mutation`` node. A backend that keeps
the graph and stops makes nothing run. ``--torch-2.11-call-run`` replaces dynamo's handling of ``kernel.run(grid=...)``
by torch 2.11's, which drops the kernel's source (so an autotuner's ``prune_configs_by`` cannot be traced through
it): the launch path :class:`fla.utils.launch.LeanKernel` takes under compile must not depend on that call.

    python tests/fla/dynamo_trace_worker.py [--torch-2.11-call-run]
prints ``<case> ok <kernel launches in the graph>`` or ``<case> error <type>: <first line>``.
"""

from __future__ import annotations

import sys

import torch
import torch._dynamo
import torch._dynamo.variables.builder as dynamo_builder
import torch.utils._triton as torch_triton

torch_triton.has_triton = lambda: True
dynamo_builder.has_triton = lambda: True

import torch.nn.functional as F  # noqa: E402

import fla.utils.backend as fla_backend  # noqa: E402
from fla.ops.attn import parallel_attn  # noqa: E402
from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule  # noqa: E402
from fla.ops.rwkv7 import chunk_rwkv7  # noqa: E402

fla_backend.select_backend = lambda *tensors: "triton"


def torch_211_call_run(self, variable, args, kwargs, tx):
    """torch 2.11's ``TritonHOPifier.call_run``: a new kernel variable without the source."""
    if "grid" not in kwargs:
        self.raise_unsupported("Triton kernel requires to be called with a grid")
    grid = kwargs.pop("grid")
    kwargs.pop("warmup", None)
    return self.call_triton_kernel(
        type(variable)(kernel=variable.kernel, kernel_idx=variable.kernel_idx, grid=grid), args, kwargs, tx
    )


class Captured(Exception):
    pass


def launches(gm: torch.fx.GraphModule) -> int:
    return sum(
        str(node.target) == "triton_kernel_wrapper_mutation"
        for module in gm.modules()
        if isinstance(module, torch.fx.GraphModule)
        for node in module.graph.nodes
    )


def trace(case: str, fn, *inputs) -> None:
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        raise Captured

    torch._dynamo.reset()
    try:
        torch.compile(fn, backend=backend, fullgraph=True)(*inputs)
    except Exception as err:  # noqa: BLE001 - reported, the parent asserts
        if not graphs:
            print(f"{case} error {type(err).__name__}: {str(err).strip().splitlines()[0]}")
            return
    print(f"{case} ok {launches(graphs[0])}")


def main() -> None:
    if "--torch-2.11-call-run" in sys.argv:
        from torch._higher_order_ops.triton_kernel_wrap import TritonHOPifier

        TritonHOPifier.call_run = torch_211_call_run
    q = torch.randn(1, 64, 4, 32, requires_grad=True)
    k, v = torch.randn(1, 64, 2, 32), torch.randn(1, 64, 2, 32)
    g = torch.randn(1, 64, 4).sigmoid().log()
    trace("parallel_attn", lambda q, k, v: parallel_attn(q, k, v), q, k, v)
    trace("parallel_attn_window_gate", lambda q, k, v, g: parallel_attn(q, k, v, g, window_size=16), q, k, v, g)
    # the recurrent delta kernel: an autotuner whose config pruning runs under dynamo (decode, and training)
    k = F.normalize(torch.randn(1, 64, 4, 32), dim=-1)
    v, beta = torch.randn(1, 64, 4, 32), torch.rand(1, 64, 4)

    def recurrent(q, k, v, g, beta):
        return fused_recurrent_gated_delta_rule(q, k, v, g, beta)[0]

    trace("fused_recurrent_gated_delta_rule", recurrent, q.detach(), k, v, g, beta)
    trace("fused_recurrent_gated_delta_rule_train", recurrent, q, k, v, g, beta)
    # the chunked DPLR op (RWKV7) with autograd: forward (prep, walk) and backward (the recomputed prep and walk, then
    # the state-gradient walk and the local kernel); disable_recompute=True keeps the forward's: two launches fewer
    kk = F.normalize(torch.randn(1, 64, 2, 32), dim=-1)
    r, w = torch.randn(1, 64, 2, 32, requires_grad=True), -0.6 * torch.rand(1, 64, 2, 32)
    rwkv7 = (r, w, torch.randn(1, 64, 2, 32), torch.randn(1, 64, 2, 32), -kk, kk * torch.rand(1, 64, 2, 32))
    for keep in (False, True):
        name = "chunk_rwkv7_train" + ("_disable_recompute" if keep else "")
        trace(name, lambda *x, keep=keep: chunk_rwkv7(*x, disable_recompute=keep)[0], *rwkv7)


if __name__ == "__main__":
    main()
