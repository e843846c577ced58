"""torchrun helper (2 gloo ranks): each family's TP plan against the unsplit model, all families in one launch.

Usage: ``python -m torch.distributed.run --nproc_per_node=2 tests/fla/models/tp_worker.py OUT.json CONFIG.json...``

Per config: the model (float32, a fixed seed) is built twice; one copy is sharded by
:func:`flame.parallelize.apply_tp` over the 2 ranks, the other stays whole. Both run forward + backward on the
same batch; rank 0 writes ``{config path: {"loss": rel. error, "grad": max rel. error over every parameter,
"worst": that parameter's name}}`` (or ``{"error": ...}``) to ``OUT.json``. The conformance suite asserts on it
(one process pair for every family instead of two trainer runs per family).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import fla  # noqa: E402, F401  (registers the models)
from flame.parallelize import apply_tp  # noqa: E402
from tests.fla.models.families import BY_TYPE  # noqa: E402

# a small even vocabulary (the embedding and head split over it) and a wider init than 0.02, so that every token
# mixer moves the logits (a wrong split must show above fp32 noise)
OVERRIDES = dict(vocab_size=128, initializer_range=0.1)


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def compare(path: str, mesh) -> dict:
    config = AutoConfig.from_pretrained(path, **OVERRIDES)
    torch.manual_seed(0)
    whole = AutoModelForCausalLM.from_config(config)
    family = BY_TYPE.get(config.model_type)
    if family is not None and family.perturb_init:  # zero-initialized paths (RWKV7's o_proj) would carry no gradient
        with torch.no_grad():
            for p in whole.parameters():
                p.add_(torch.randn_like(p) * family.perturb_init)
    split = copy.deepcopy(whole)
    apply_tp(split, mesh)
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (whole, split):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(full(loss).detach())
    grads = {n: (full(p.grad), q.grad) for (n, p), (_, q) in zip(split.named_parameters(), whole.named_parameters())}
    missing = [n for n, (g, w) in grads.items() if g is None or w is None]
    if missing:
        return {"error": f"no gradient for {missing}"}
    errors = {n: rel(g, w) for n, (g, w) in grads.items()}
    # a NaN first (Python's max may drop it), then the largest
    worst = max(errors, key=lambda n: (math.isnan(errors[n]), errors[n]))
    return {"loss": rel(losses[1], losses[0]), "grad": errors[worst], "worst": worst}


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    out, paths = sys.argv[1], sys.argv[2:]
    results = {}
    for path in paths:
        try:
            results[path] = compare(path, mesh)
        except Exception:  # one family's failure is its own test's failure, not the others'
            results[path] = {"error": traceback.format_exc()[-3000:]}
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
