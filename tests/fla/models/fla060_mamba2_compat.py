"""Mamba2 checkpoints saved by flash-linear-attention 0.6.0 load here with the same keys and logits.

The two-process protocol of ``fla060_compat.py`` (both packages are named ``fla``)::

    PYTHONPATH=$FLA060_PATH TRITON_INTERPRET=1 python fla060_mamba2_compat.py save OUT   # fla 0.6.0
    PYTHONPATH=<this repo>  python fla060_mamba2_compat.py load OUT                      # ours: compare

fla 0.6.0 runs on CPU: without mamba_ssm its Mamba2 takes its PyTorch SSD path (``torch_forward``); its gated
RMSNorm and block norms are Triton kernels, run in the interpreter (its autotuner is told every config takes
equal time). Norm weights and ``D`` are perturbed away from their init so that they matter in the comparison.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

BASE = dict(hidden_size=64, num_hidden_layers=2, head_dim=16, state_size=16, vocab_size=128, fuse_cross_entropy=False)
CASES = {
    "groups_gated_norm": dict(BASE, n_groups=2),
    "norm_before_gate_conv3_bias": dict(BASE, norm_before_gate=True, conv_kernel=3, use_bias=True),
    "ungated_hdim_unfused_tied": dict(BASE, rmsnorm=False, D_has_hdim=True, fuse_norm=False, tie_word_embeddings=True),
    "dt_limit_fp32_off": dict(BASE, dt_limit=(0.0, 0.05), residual_in_fp32=False),
}
LOGITS_RATIO = 1e-4  # fp32 on both sides, different chunkings of the same scan


def _inputs() -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], (2, 67), generator=torch.Generator().manual_seed(1234))


@torch.no_grad()
def _perturb(model) -> None:
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("norm_f.weight") or name.endswith(".D"):
            p.add_(torch.randn_like(p) * 0.3)


def save(out: Path) -> int:
    import triton.runtime.autotuner as autotuner
    from transformers import AutoConfig, AutoModelForCausalLM

    import fla

    if getattr(fla, "__version__", None) != "0.6.0":
        print(f"save must run with flash-linear-attention 0.6.0; imported fla {fla.__version__} from {fla.__file__}")
        return 2
    autotuner.Autotuner._bench = lambda self, *args, config=None, **kwargs: [0.0, 0.0, 0.0]
    report = {}
    for name, fields in CASES.items():
        try:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model("mamba2", **fields)).eval()
            _perturb(model)
            input_ids = _inputs()
            logits = model(input_ids, use_cache=False).logits.float()
            model.save_pretrained(out / name)
            torch.save({"input_ids": input_ids, "logits": logits}, out / name / "ref.pt")
            report[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
        except Exception:
            report[name] = {"error": traceback.format_exc(limit=4)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


def load(out: Path) -> int:
    from transformers import AutoModelForCausalLM

    import fla

    if getattr(fla, "__version__", None) == "0.6.0":
        print(f"load must run with this repository's fla, got fla 0.6.0 from {fla.__file__}")
        return 2
    report = json.loads((out / "report.json").read_text())
    failures = 0
    for name in CASES:
        problems = []
        if "error" in report.get(name, {"error": "no entry"}):
            problems.append(f"fla 0.6.0 failed: {report.get(name, {}).get('error', 'no entry')}")
        else:
            model, info = AutoModelForCausalLM.from_pretrained(out / name, output_loading_info=True)
            problems += [
                f"{kind}={info[kind]}"
                for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(kind)
            ]
            ours = {k: list(v.shape) for k, v in model.state_dict().items()}
            if ours != report[name]:
                problems.append(f"state dicts differ: ours {sorted(ours)} vs fla060 {sorted(report[name])}")
            ref = torch.load(out / name / "ref.pt")
            for mode in ("eval", "train"):  # eval: the fused_recurrent op would take <= 64 tokens; 67 run chunked
                with torch.no_grad():
                    logits = getattr(model, mode)()(ref["input_ids"], use_cache=False).logits
                err = ((logits - ref["logits"]).norm() / ref["logits"].norm()).item()
                print(f"{name:32s} {mode:5s} logits_rel_err={err:.2e}")
                if not err <= LOGITS_RATIO:
                    problems.append(f"{mode} logits differ: relative error {err:.3e} > {LOGITS_RATIO:.0e}")
        print(("OK   " if not problems else "FAIL ") + name)
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
