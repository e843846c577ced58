"""Checkpoint compatibility with flash-linear-attention 0.6.0 (both packages are named ``fla``).

Run as two processes (``test_fla060_compat.py`` does it on the GPU machine)::

    PYTHONPATH=$FLA060_PATH python fla060_compat.py save OUT   # fla 0.6.0: build, save, record logits
    PYTHONPATH=<this repo>  python fla060_compat.py load OUT [--require-logits]   # ours: compare

``save`` writes, per case, ``OUT/<case>/`` (``save_pretrained``) and ``ref.pt`` (input ids, logits)
plus ``OUT/report.json``: how fla 0.6.0 ran (``native``; or ``sdpa-shim`` when its ``Attention``
cannot be built because flash-attn is missing: fla 0.6.0's model then runs with
``flash_attn_func`` replaced by the causal SDPA function below, everything else being fla
0.6.0's own code), the error it raised natively, and its state-dict keys. ``load`` checks that
every checkpoint loads with no missing / unexpected / mismatched keys, that the key sets are
equal, and that the logits agree; it prints one line per case and exits 1 on any failure.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

BASE = dict(hidden_size=128, num_hidden_layers=2, num_heads=4, vocab_size=512, max_position_embeddings=256)
CASES = {
    "gqa_qknorm": dict(BASE, num_kv_heads=2, qk_norm=True, fuse_cross_entropy=False),
    "mha_tied_unfused": dict(BASE, tie_word_embeddings=True, fuse_norm=False, fuse_swiglu=False),
    "window_qkv_bias": dict(BASE, num_kv_heads=1, window_size=8, qkv_bias=True, rope_theta=500000.0),
}
LOGITS_RATIO = 2e-3  # fp32 on both sides; allows TF32 matmuls if a package enables them


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(vocab_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    return torch.randint(0, vocab_size, (2, 67), generator=generator)


def sdpa_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **_):
    """flash-attn's ``flash_attn_func`` semantics (``[B, T, H, D]``, bottom-right causal, window) on SDPA."""
    if dropout_p:
        raise NotImplementedError("the SDPA stand-in has no dropout")
    T, S = q.shape[1], k.shape[1]
    qi = torch.arange(S - T, S, device=q.device)[:, None]
    kj = torch.arange(S, device=q.device)[None, :]
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device)
    if causal:
        allowed &= kj <= qi
    if window_size[0] >= 0:
        allowed &= kj >= qi - window_size[0]
    if window_size[1] >= 0:
        allowed &= kj <= qi + window_size[1]
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=allowed,
        scale=softmax_scale,
        enable_gqa=q.shape[2] != k.shape[2],
    )
    return o.transpose(1, 2)


def _unsupported_varlen(*args, **kwargs):
    raise NotImplementedError("the compatibility check runs no padded / varlen batches")


_NATIVE_ERROR: list[str] = []  # why fla 0.6.0's Attention could not be built natively (once known)


def _build_fla060(config):
    """fla 0.6.0's model natively, else with the SDPA stand-in for flash-attn: ``(model, mode, native_error)``."""
    from transformers import AutoModelForCausalLM

    if not _NATIVE_ERROR:
        try:
            return AutoModelForCausalLM.from_config(config), "native", None
        except ImportError as error:
            _NATIVE_ERROR.append(f"{type(error).__name__}: {error}")
        import fla.layers.attn as fla_attn

        fla_attn.flash_attn_func = sdpa_flash_attn_func
        fla_attn.flash_attn_varlen_func = _unsupported_varlen
    return AutoModelForCausalLM.from_config(config), "sdpa-shim", _NATIVE_ERROR[0]


def save(out: Path) -> int:
    import fla

    if getattr(fla, "__version__", None) != "0.6.0":
        print(f"save must run with flash-linear-attention 0.6.0; imported fla {fla.__version__} from {fla.__file__}")
        return 2
    from fla.models import TransformerConfig

    report = {"fla": fla.__version__, "fla_file": fla.__file__, "torch": torch.__version__, "cases": {}}
    for name, fields in CASES.items():
        entry = report["cases"].setdefault(name, {})
        config = TransformerConfig(**fields)
        try:
            torch.manual_seed(0)
            model, entry["mode"], entry["native_error"] = _build_fla060(config)
        except Exception:
            entry["mode"], entry["build_error"] = "failed", traceback.format_exc(limit=3)
            try:  # key names without running anything
                with torch.device("meta"):
                    entry["keys"] = sorted(_build_fla060(config)[0].state_dict())
            except Exception:
                entry["meta_error"] = traceback.format_exc(limit=3)
            continue
        entry["keys"] = sorted(model.state_dict())
        model.save_pretrained(out / name)
        model = model.to(_device(), torch.float32).eval()
        input_ids = _inputs(config.vocab_size)
        try:
            with torch.no_grad():
                logits = model(input_ids.to(_device()), use_cache=False).logits.float().cpu()
            torch.save({"input_ids": input_ids, "logits": logits}, out / name / "ref.pt")
        except Exception:
            entry["mode"], entry["forward_error"] = f"{entry['mode']} (forward failed)", traceback.format_exc(limit=3)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


def load(out: Path, require_logits: bool) -> int:
    from transformers import AutoModelForCausalLM

    import fla

    if getattr(fla, "__version__", None) == "0.6.0":
        print(f"load must run with this repository's fla, got fla 0.6.0 from {fla.__file__}")
        return 2
    report = json.loads((out / "report.json").read_text())
    failures = 0
    print(f"fla 0.6.0 from {report['fla_file']} (torch {report['torch']}); ours from {fla.__file__}")
    for name in CASES:
        entry = report["cases"].get(name, {})
        line = f"{name:18s} fla060={entry.get('mode', 'missing'):24s}"
        problems = []
        if (out / name).is_dir():
            model, info = AutoModelForCausalLM.from_pretrained(out / name, output_loading_info=True)
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
                if info.get(kind):
                    problems.append(f"{kind}={sorted(map(str, info[kind]))}")
            ours = set(model.state_dict())
        else:  # fla 0.6.0 saved nothing: compare key names only
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(_our_config(name))
            ours = set(model.state_dict())
        theirs = set(entry.get("keys", []))
        if not theirs:
            problems.append("no fla 0.6.0 key list (see report.json)")
        elif ours != theirs:
            problems.append(f"only ours: {sorted(ours - theirs)}; only fla060: {sorted(theirs - ours)}")
        else:
            line += f" keys=equal({len(ours)})"
        ref_file = out / name / "ref.pt"
        if ref_file.exists():
            ref = torch.load(ref_file)
            model = model.to(_device(), torch.float32).eval()
            with torch.no_grad():
                logits = model(ref["input_ids"].to(_device()), use_cache=False).logits.float().cpu()
            err = ((logits - ref["logits"]).norm() / ref["logits"].norm()).item()
            line += f" logits_rel_err={err:.2e}"
            if not err <= LOGITS_RATIO:
                problems.append(f"logits differ: relative error {err:.3e} > {LOGITS_RATIO:.0e}")
        else:
            line += " logits=not-compared (fla 0.6.0 did not run)"
            if require_logits:
                problems.append("fla 0.6.0 produced no logits to compare (its error is below)")
        for key in ("native_error", "build_error", "forward_error"):
            if entry.get(key):
                line += f"\n    fla060 {key}: {entry[key].strip().splitlines()[-1]}"
        print(("OK   " if not problems else "FAIL ") + line)
        for problem in problems:
            print(f"    {problem}")
        failures += bool(problems)
    return 1 if failures else 0


def _our_config(name: str):
    from fla.models import TransformerConfig

    return TransformerConfig(**CASES[name])


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) not in (2, 3) or args[0] not in ("save", "load") or args[2:] not in ([], ["--require-logits"]):
        sys.exit(f"usage: {sys.argv[0]} save OUT_DIR | load OUT_DIR [--require-logits]")
    directory = Path(args[1])
    directory.mkdir(parents=True, exist_ok=True)
    sys.exit(save(directory) if args[0] == "save" else load(directory, require_logits=len(args) == 3))
