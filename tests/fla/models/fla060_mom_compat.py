"""Checkpoint compatibility of the MoM models with flash-linear-attention 0.6.0 (keys, logits, loss with its aux term).

The two-process protocol of ``fla060_compat.py``::

    PYTHONPATH=$FLA060_PATH python fla060_mom_compat.py save OUT   # fla 0.6.0: build, save, logits + loss
    PYTHONPATH=<this repo>  python fla060_mom_compat.py load OUT   # ours: load, compare

fla 0.6.0 groups the routed tokens with ``argsort`` of (batch, memory) keys, which is not stable: on CPU (and
possibly on CUDA) the tokens of one memory then reach its recurrence out of order, a result no causal model gives
(its MoM is not even causal then). The ``save`` side makes that sort stable (``torch.Tensor.argsort`` with
``stable=True``; everything else is fla 0.6.0's own code), i.e. runs fla's intended maths, which ours computes.
On CPU fla 0.6.0 runs in the Triton interpreter (its autotuner told that all configs take equal time): 40 tokens
per row, its fused_recurrent path, as its chunk kernels fail in the interpreter; on CUDA 67 tokens (chunk path).
fla 0.6.0's hybrid MoM (an ``attn`` layer) cannot run (its block unpacks four values from ``Attention``), so no
case has one.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fla060_compat import LOGITS_RATIO, _device, _inputs  # noqa: E402
from fla060_linear_compat import _skip_autotune_timing  # noqa: E402

BASE = dict(hidden_size=64, num_hidden_layers=2, num_heads=2, head_dim=16, vocab_size=256, fuse_cross_entropy=False)
CASES = {
    "shared_top2": dict(BASE, num_memories=3, topk=2, shared_mem=True, aux_loss_scale=0.5),
    "single_kv_top1_no_gate": dict(BASE, num_memories=4, topk=1, single_kv_proj=True, use_output_gate=False),
    "wide_v_conv3_tied_unfused": dict(
        BASE,
        num_memories=2,
        topk=2,
        shared_mem=False,
        expand_v=2,
        conv_size=3,
        tie_word_embeddings=True,
        fuse_norm=False,
    ),
}


def _seq_len() -> int:
    return 40 if _device() == "cpu" else 67


def _stable_argsort() -> None:
    argsort = torch.Tensor.argsort

    def stable(self, dim=-1, descending=False, stable=True):
        return argsort(self, dim=dim, descending=descending, stable=True)

    torch.Tensor.argsort = stable


def _run(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model = model.to(_device(), torch.float32).eval()
    x = input_ids.to(_device())
    with torch.no_grad():
        out = model(x, labels=x, use_cache=False)
    return {"logits": out.logits.float().cpu(), "loss": out.loss.float().cpu(), "aux_loss": out.aux_loss.float().cpu()}


def save(out: Path) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla

    if getattr(fla, "__version__", None) != "0.6.0":
        print(f"save must run with flash-linear-attention 0.6.0; imported fla {fla.__version__} from {fla.__file__}")
        return 2
    _skip_autotune_timing()
    _stable_argsort()
    report = {"fla_file": fla.__file__, "torch": torch.__version__, "cases": {}}
    for name, fields in CASES.items():
        entry = report["cases"].setdefault(name, {})
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model("mom", **fields))
        entry["keys"] = {k: list(v.shape) for k, v in model.state_dict().items()}
        model.save_pretrained(out / name)
        input_ids = _inputs(fields["vocab_size"])[:, : _seq_len()]
        try:
            torch.save({"input_ids": input_ids, **_run(model, input_ids)}, out / name / "ref.pt")
        except Exception:
            entry["forward_error"] = traceback.format_exc(limit=3)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def load(out: Path) -> int:
    from transformers import AutoModelForCausalLM

    import fla

    if getattr(fla, "__version__", None) == "0.6.0":
        print(f"load must run with this repository's fla, got fla 0.6.0 from {fla.__file__}")
        return 2
    report = json.loads((out / "report.json").read_text())
    failures = 0
    for name in CASES:
        entry, problems = report["cases"].get(name, {}), []
        model, info = AutoModelForCausalLM.from_pretrained(out / name, output_loading_info=True)
        problems += [
            f"{kind}={info[kind]}" for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[kind]
        ]
        if {k: list(v.shape) for k, v in model.state_dict().items()} != entry.get("keys"):
            problems.append("state dict keys / shapes differ from fla 0.6.0's")
        line = f"{name:28s}"
        if (out / name / "ref.pt").exists():
            ref = torch.load(out / name / "ref.pt")
            ours = _run(model, ref["input_ids"])
            errors = {key: _rel(ours[key], ref[key]) for key in ("logits", "loss", "aux_loss")}
            line += " " + " ".join(f"{key}_rel_err={err:.2e}" for key, err in errors.items())
            problems += [
                f"{key} differ: {err:.3e} > {LOGITS_RATIO:.0e}" for key, err in errors.items() if err > LOGITS_RATIO
            ]
        else:
            problems.append(f"fla 0.6.0 did not run: {entry.get('forward_error', '?').strip().splitlines()[-1]}")
        print(("OK   " if not problems else "FAIL ") + line)
        for problem in problems:
            print(f"    {problem}")
        failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) != 2 or args[0] not in ("save", "load"):
        sys.exit(f"usage: {sys.argv[0]} save OUT_DIR | load OUT_DIR")
    directory = Path(args[1])
    directory.mkdir(parents=True, exist_ok=True)
    sys.exit(save(directory) if args[0] == "save" else load(directory))
