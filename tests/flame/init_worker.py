"""Child process of test_model_init.py: flame's init on DTensor parameters (a 1-rank gloo mesh, as FSDP leaves
them) against the same init on plain parameters, for the families named on the command line (all: none named).
Prints one JSON line ``{family/variant: "ok" | error}``."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

from flame.model import init_weights
from tests.fla.models.families import FAMILIES


def _as_dtensors(model: nn.Module, mesh) -> None:
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                full = distribute_tensor(param.data, mesh, [Replicate()])
                module._parameters[name] = nn.Parameter(full, requires_grad=param.requires_grad)


def check(family, variant: str, mesh) -> str:
    plain, sharded = family.model(variant), family.model(variant)
    _as_dtensors(sharded, mesh)
    try:
        init_weights(plain, 0, torch.device("cpu"))
        init_weights(sharded, 0, torch.device("cpu"))
    except Exception as e:  # noqa: BLE001 - reported per family
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    for (name, a), (_, b) in zip(plain.named_parameters(), sharded.named_parameters(), strict=True):
        b = b.full_tensor() if isinstance(b, DTensor) else b
        if not torch.equal(a, b):
            return f"{name} differs between the plain and the DTensor init"
    return "ok"


def main() -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,))
    wanted = set(sys.argv[1:])
    results = {
        f"{family.model_type}/{variant}": check(family, variant, mesh)
        for family in FAMILIES
        if not wanted or family.model_type in wanted
        for variant in family.variants
    }
    dist.destroy_process_group()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
