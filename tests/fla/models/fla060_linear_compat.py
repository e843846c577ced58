"""Checkpoint compatibility of the GLA, RetNet, DeltaNet and Gated DeltaNet models with flash-linear-attention 0.6.0.

The same two-process protocol as ``fla060_compat.py`` (whose helpers it reuses), for the
linear-attention families::

    PYTHONPATH=$FLA060_PATH python fla060_linear_compat.py save OUT   # fla 0.6.0: build, save, logits
    PYTHONPATH=<this repo>  python fla060_linear_compat.py load OUT [--require-logits]

fla 0.6.0's models only run on CUDA (its ops are Triton kernels; its own triton version may not
match the installed one): when its forward fails, ``report.json`` records the error and ``load``
compares key names and shapes only (or fails with ``--require-logits``). fla 0.6.0's
``chunk_delta_rule`` refuses float32 inputs, so the DeltaNet cases run 64 tokens (its DeltaNet then
uses ``fused_recurrent_delta_rule``; ours too, in eval mode).

fla 0.6.0's autotuner is told that all configs take equal time (this checks logits, not speed).
On CPU with ``TRITON_INTERPRET=1``, fla 0.6.0 runs in the Triton interpreter: every case then runs
64 tokens, the fused_recurrent path, because its chunk kernels fail in the interpreter; logits are
compared where its forward ran.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fla060_compat import LOGITS_RATIO, _build_fla060, _device, _inputs  # noqa: E402

BASE = dict(hidden_size=128, num_hidden_layers=2, num_heads=4, vocab_size=512, fuse_cross_entropy=False)
HYBRID = {"layers": [1], "num_heads": 4, "num_kv_heads": 2}
CASES = {
    "gla": ("gla", dict(BASE)),
    "gla_conv_gqa_clamp": ("gla", dict(BASE, use_short_conv=True, num_kv_heads=2, clamp_min=-0.1)),
    "gla_unfused_tied_hybrid": ("gla", dict(BASE, fuse_norm=False, tie_word_embeddings=True, attn=HYBRID)),
    "retnet": ("retnet", dict(BASE)),
    "retnet_gqa_hybrid": ("retnet", dict(BASE, num_kv_heads=2, attn=HYBRID)),
    "delta_net": ("delta_net", dict(BASE)),
    "delta_net_gate_relu_sum_hybrid": (
        "delta_net",
        dict(BASE, use_gate=True, qk_activation="relu", qk_norm="sum", allow_neg_eigval=True, attn=HYBRID),
    ),
    "delta_net_noconv_elu_tied": (
        "delta_net",
        dict(
            BASE, use_short_conv=False, use_beta=False, qk_activation="elu", fuse_norm=False, tie_word_embeddings=True
        ),
    ),
    "gated_deltanet": ("gated_deltanet", dict(BASE, head_dim=32)),
    "gated_deltanet_gva_hybrid": (
        "gated_deltanet",
        dict(BASE, head_dim=32, num_heads=2, num_v_heads=4, use_gate=False, allow_neg_eigval=True, attn=HYBRID),
    ),
    "gated_deltanet_noconv_sigmoid": (
        "gated_deltanet",
        dict(BASE, head_dim=32, use_short_conv=False, output_gate_activation="sigmoid", fuse_norm=False),
    ),
}
# fla 0.6.0's chunk_delta_rule refuses float32; with at most 64 tokens its DeltaNet runs fused_recurrent instead
SEQ_LEN = {"delta_net": 64}
INTERPRET_SEQ_LEN = 64  # on CPU (Triton interpreter) fla 0.6.0's chunk kernels fail: decode-length inputs only


def _interpreting() -> bool:
    return _device() == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def _seq_len(model_type: str) -> int | None:
    return INTERPRET_SEQ_LEN if _interpreting() else SEQ_LEN.get(model_type)


def _skip_autotune_timing() -> None:
    """Report equal times for every autotune config (the first config wins).

    The check compares keys and logits, not speed: on a GPU, fla 0.6.0 timing every config of every
    kernel for 11 models took over 330 s; on CPU the interpreter cannot time configs at all.
    """
    import triton.runtime.autotuner as autotuner

    autotuner.Autotuner._bench = lambda self, *args, config=None, **kwargs: [0.0, 0.0, 0.0]


def _config(name: str):
    from transformers import AutoConfig

    model_type, fields = CASES[name]
    return AutoConfig.for_model(model_type, **fields)


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    model = model.to(_device(), torch.float32).eval()
    with torch.no_grad():
        return model(input_ids.to(_device()), use_cache=False).logits.float().cpu()


def save(out: Path) -> int:
    import fla

    if getattr(fla, "__version__", None) != "0.6.0":
        print(f"save must run with flash-linear-attention 0.6.0; imported fla {fla.__version__} from {fla.__file__}")
        return 2
    _skip_autotune_timing()
    report = {"fla": fla.__version__, "fla_file": fla.__file__, "torch": torch.__version__, "cases": {}}
    for name in CASES:
        entry = report["cases"].setdefault(name, {})
        config = _config(name)
        try:
            torch.manual_seed(0)
            model, entry["mode"], entry["native_error"] = _build_fla060(config)
        except Exception:
            entry["mode"], entry["build_error"] = "failed", traceback.format_exc(limit=3)
            continue
        entry["keys"] = {k: list(v.shape) for k, v in model.state_dict().items()}
        model.save_pretrained(out / name)
        input_ids = _inputs(config.vocab_size)[:, : _seq_len(config.model_type)]
        try:
            torch.save({"input_ids": input_ids, "logits": _logits(model, input_ids)}, out / name / "ref.pt")
        except Exception:
            entry["mode"], entry["forward_error"] = f"{entry['mode']} (forward failed)", traceback.format_exc(limit=3)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


def _check_case(
    out: Path, name: str, entry: dict, require_logits: bool, ratio: float = LOGITS_RATIO
) -> tuple[str, list[str]]:
    from transformers import AutoModelForCausalLM

    line, problems = f"{name:32s} fla060={entry.get('mode', 'missing'):24s}", []
    if not (out / name).is_dir():
        return line, problems + ["fla 0.6.0 saved no checkpoint (see report.json)"]
    model, info = AutoModelForCausalLM.from_pretrained(out / name, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(kind):
            problems.append(f"{kind}={sorted(map(str, info[kind]))}")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    if ours != entry.get("keys"):
        problems.append(f"state dicts differ: ours {sorted(ours)} vs fla060 {sorted(entry.get('keys', {}))}")
    else:
        line += f" keys=equal({len(ours)})"
    ref_file = out / name / "ref.pt"
    if ref_file.exists():
        ref = torch.load(ref_file)
        logits = _logits(model, ref["input_ids"])
        err = ((logits - ref["logits"]).norm() / ref["logits"].norm()).item()
        line += f" logits_rel_err={err:.2e}"
        if not err <= ratio:
            problems.append(f"logits differ: relative error {err:.3e} > {ratio:.0e}")
    else:
        line += " logits=not-compared (fla 0.6.0 did not run)"
        if require_logits:
            problems.append("fla 0.6.0 produced no logits to compare (its error is below)")
    for key in ("native_error", "build_error", "save_error", "forward_error"):
        if entry.get(key):
            line += f"\n    fla060 {key}: {entry[key].strip().splitlines()[-1]}"
    return line, problems


def load(out: Path, require_logits: bool, names=None, ratio_of=lambda name: LOGITS_RATIO) -> int:
    """Check every case of ``names`` (default :data:`CASES`) that ``save`` wrote under ``out``, its logits within
    ``ratio_of(name)``; prints a line per case, returns 1 on any failure."""
    import fla

    if getattr(fla, "__version__", None) == "0.6.0":
        print(f"load must run with this repository's fla, got fla 0.6.0 from {fla.__file__}")
        return 2
    report = json.loads((out / "report.json").read_text())
    print(f"fla 0.6.0 from {report['fla_file']} (torch {report['torch']}); ours from {fla.__file__}")
    failures = 0
    for name in CASES if names is None else names:
        entry = report["cases"].get(name, {})
        line, problems = _check_case(out, name, entry, require_logits, ratio_of(name))
        print(("OK   " if not problems else "FAIL ") + line)
        for problem in problems:
            print(f"    {problem}")
        failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (2, 3) or args[0] not in ("save", "load") or args[2:] not in ([], ["--require-logits"]):
        sys.exit(f"usage: {sys.argv[0]} save OUT_DIR | load OUT_DIR [--require-logits]")
    directory = Path(args[1])
    directory.mkdir(parents=True, exist_ok=True)
    sys.exit(save(directory) if args[0] == "save" else load(directory, require_logits=len(args) == 3))
