"""torchrun helper (2 gloo ranks): TP norms over all heads (``TPRegion.full_norms``) == the unsplit norm.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 tests/flame/dist/tp_full_norm.py``; exits non-zero
on a mismatch. Checks :func:`flame.parallelize.tp_rms_norm` against fla's ``RMSNorm`` / ``FusedRMSNormGated``
(outputs and the gradients of x, g and weight), then a toy region sharded by ``_shard_region`` with a gated full
norm and a split input (its output and every parameter's gradient against the same module unsharded), then fla
0.6.0's ``NormParallel`` on an ``RMSNorm`` with the sequence split over the ranks.
"""

from __future__ import annotations

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402

from fla.models.tp_plan import TPRegion  # noqa: E402
from fla.modules.gated_norm import FusedRMSNormGated  # noqa: E402
from fla.modules.norm import RMSNorm  # noqa: E402
from flame.parallelize import _shard_region, tp_rms_norm  # noqa: E402

D, H = 12, 8  # split width (heads x head width: 4 x 3), model width


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    err = ((got - want).norm() / want.norm()).item()
    if not err < tol:
        raise AssertionError(f"rank {dist.get_rank()}: {name}: relative error {err:.3g}")


def norm_vs_fla(rank: int, world: int, group) -> None:
    torch.manual_seed(0)
    for gated in (False, True):
        norm = FusedRMSNormGated(D, eps=1e-5) if gated else RMSNorm(D, eps=1e-5)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
        x, g, dy = (
            torch.randn(2, 5, D, requires_grad=True),
            torch.randn(2, 5, D, requires_grad=True),
            torch.randn(2, 5, D),
        )
        want = norm(x, g) if gated else norm(x)
        want.backward(dy)
        part = lambda t: t.detach().chunk(world, -1)[rank]  # noqa: E731
        xl, gl = part(x).requires_grad_(), part(g).requires_grad_()
        wl = part(norm.weight).requires_grad_()
        y = tp_rms_norm(xl, wl, norm.eps, D, group, gl if gated else None)
        y.backward(part(dy))  # the loss is the sum of every rank's share
        check(f"gated={gated} y", y, part(want))
        check(f"gated={gated} dx", xl.grad, part(x.grad))
        check(f"gated={gated} dweight", wl.grad, part(norm.weight.grad))
        if gated:
            check("dg", gl.grad, part(g.grad))


class Toy(nn.Module):
    """A head-split region: column projections, a gated norm over all of them, a per-feature input, a row output."""

    def __init__(self):
        super().__init__()
        self.width = D
        self.v_proj, self.g_proj = nn.Linear(H, D, bias=False), nn.Linear(H, D, bias=False)
        self.g_norm = FusedRMSNormGated(D, eps=1e-5)
        self.o_proj = nn.Linear(D, H, bias=False)

    def forward(self, x, bound=None):
        v = self.v_proj(x)
        if bound is not None:
            assert bound.shape == (self.width,), bound.shape
            v = v * bound
        return self.o_proj(self.g_norm(v, self.g_proj(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Toy()


def region_vs_unsharded(rank: int, world: int) -> None:
    torch.manual_seed(1)
    mesh = init_device_mesh("cpu", (world,))
    ref = Block()
    with torch.no_grad():
        ref.attn.g_norm.weight.uniform_(0.5, 1.5)
    tp = copy.deepcopy(ref)
    spec = TPRegion(
        col=("v_proj", "g_proj"), row=("o_proj",), divide=("width",), full_norms=("g_norm",), split_inputs=("bound",)
    )
    _shard_region(tp, "attn", spec, mesh, "toy")
    x = torch.randn(2, 5, H)
    bound = torch.rand(D)
    outs = []
    for model in (ref, tp):
        b = bound.clone().requires_grad_()
        y = model.attn(x, bound=b)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        outs.append((y, b.grad))
    check("region y", outs[1][0], outs[0][0])
    check("region d bound", outs[1][1], outs[0][1])
    for (name, p_ref), (_, p_tp) in zip(ref.named_parameters(), tp.named_parameters(), strict=True):
        check(f"region d {name}", p_tp.grad.full_tensor(), p_ref.grad)


def norm_parallel_vs_unsharded(rank: int, world: int) -> None:
    """fla 0.6.0's ``NormParallel`` (sequence-parallel norm): each rank's share of the sequence normalized by the
    replicated weight == that share of the unsharded norm, outputs and the gradients of x and weight."""
    from torch.distributed.tensor.parallel import parallelize_module

    from fla.modules.norm import NormParallel

    torch.manual_seed(2)
    mesh = init_device_mesh("cpu", (world,))
    ref = RMSNorm(H, eps=1e-5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    for local in (False, True):
        sp = parallelize_module(copy.deepcopy(ref), mesh, NormParallel(use_local_output=local))
        x, dy = torch.randn(2, 6, H, requires_grad=True), torch.randn(2, 6, H)
        want = ref(x)
        want.backward(dy)
        part = lambda t: t.detach().chunk(world, 1)[rank]  # noqa: E731
        xl = part(x).requires_grad_()
        y = sp(xl)
        y_local = y if local else y.to_local()
        y_local.backward(part(dy))
        check(f"NormParallel(use_local_output={local}) y", y_local, part(want))
        check(f"NormParallel(use_local_output={local}) dx", xl.grad, part(x.grad))
        check(f"NormParallel(use_local_output={local}) dweight", sp.weight.grad.full_tensor(), ref.weight.grad)
        ref.weight.grad = None


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    norm_vs_fla(rank, world, dist.group.WORLD)
    region_vs_unsharded(rank, world)
    norm_parallel_vs_unsharded(rank, world)
    dist.barrier()
    if rank == 0:
        print("tp full norm: ok")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
