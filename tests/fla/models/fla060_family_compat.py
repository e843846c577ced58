"""fla 0.6.0 checkpoints of the conformance families' test configs load here with its logits (run on a GPU).

Two processes, as ``fla060_linear_compat.py`` (whose per-case check this reuses; both packages are named ``fla``)::

    PYTHONPATH=$FLA060_PATH python fla060_family_compat.py save OUT CASES.json   # fla 0.6.0: build, save, logits
    PYTHONPATH=<this repo>  python fla060_family_compat.py load OUT CASES.json   # ours: load, compare

``CASES.json`` maps a case name to ``{"model_type", "fields", "perturb", "logits_ratio"}``: the full config fields (the
family's ``configs/<family>_tiny.json`` with the conformance suite's widths and variant on top;
``test_fla060_family_compat.py`` writes it from :data:`families.FAMILIES`), the std of the seeded noise added to every
parameter before saving (families whose init zeroes whole paths, as RWKV7's) and the bound on the logits' relative
error.

On CPU, fla 0.6.0's kernels run in the Triton interpreter with two shims for what it lacks there (loop indices that
convert like tensors, ``log1p``: :func:`_interpreter_shims`); ops that still fail run fla 0.6.0's own PyTorch
reference instead (:data:`REFERENCE_OPS`), the rest of its model unchanged.

fla 0.6.0 imports flash-attn optionally and calls it where present (softmax ``Attention``, MLA, Rodimus' window
attention, NSA's window branch); flash-attn is not installed here, so each such module gets the causal SDPA stand-in
of ``fla060_compat.py`` (``flash_attn_func`` semantics: bottom-right causal, window), the rest being fla 0.6.0's code.
Logits come from 67 tokens; where fla 0.6.0's forward raises there (it refuses some gated chunk kernels on Hopper with
triton 3.6), from 64 tokens, where its layers run their ``fused_recurrent`` ops, and ``report.json`` keeps the error.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fla060_compat import LOGITS_RATIO, _inputs, sdpa_flash_attn_func  # noqa: E402
from fla060_linear_compat import _logits, _skip_autotune_timing  # noqa: E402
from fla060_linear_compat import load as load_cases  # noqa: E402

# fla 0.6.0 modules that bind ``flash_attn_func = None`` when flash-attn is missing and call it at run time
FLASH_ATTN_USERS = ("fla.layers.attn", "fla.layers.mla", "fla.layers.rodimus", "fla.ops.nsa.parallel")
SHORT_LEN = 64  # fla 0.6.0's layers decode with their fused_recurrent ops up to 64 tokens in eval mode


def _reference_mesa_net(q, k, v, g, beta, lamb, h_kk_init=None, h_kv_init=None, output_final_state=False,
                        max_CG_iteration=30, use_qk_l2norm_in_kernel=False, cu_seqlens=None, **_):  # fmt: skip
    """fla 0.6.0's ``chunk_mesa_net`` (as its MesaNet layer calls it: no state, no varlen) by its ``naive_mesa_net_CG``
    (the same conjugate-gradient solve per token, in PyTorch; one chunk of the whole sequence)."""
    from fla.ops.mesa_net.naive import naive_mesa_net_CG

    if h_kk_init is not None or h_kv_init is not None or output_final_state or cu_seqlens is not None:
        raise NotImplementedError("the reference stand-in takes no states and no cu_seqlens")
    if use_qk_l2norm_in_kernel:
        q, k = (torch.nn.functional.normalize(x.float(), dim=-1, eps=1e-6) for x in (q, k))
    args = (x.float() for x in (q, k, v, g, lamb, beta))
    o, _, _ = naive_mesa_net_CG(*args, chunk_size=q.shape[1], max_CG_iteration=max_CG_iteration)
    return o.to(v.dtype), None, None


# fla 0.6.0 module -> (the op it calls, its PyTorch reference): swapped in on CPU only
REFERENCE_OPS = {"fla.layers.mesa_net": ("chunk_mesa_net", _reference_mesa_net)}


def _use_reference_ops() -> list[str]:
    """Swap :data:`REFERENCE_OPS` into fla 0.6.0's layers; returns the ops swapped."""
    for module, (name, reference) in REFERENCE_OPS.items():
        setattr(importlib.import_module(module), name, reference)
    return [name for name, _ in REFERENCE_OPS.values()]


class _LoopIndex(int):
    """A kernel loop's index under the Triton interpreter, which gives fla 0.6.0's kernels the Python ints of
    ``range`` where compiled code has integer tensors (``i_t.to(tl.int64)`` then raises): an int that stays one
    through integer arithmetic and converts to a scalar tensor as a tensor would."""

    def to(self, dtype, *args, **kwargs):
        import triton.language as tl

        return tl.full((), int(self), dtype)

    def __neg__(self):
        return _LoopIndex(-int(self))


def _index_op(name: str):
    base = getattr(int, name)

    def op(self, other):
        out = base(self, other)
        return _LoopIndex(out) if isinstance(other, int) and type(out) is int else out

    return op


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__floordiv__", "__mod__"):
    setattr(_LoopIndex, _name, _index_op(_name))


def _loop_range(*args):
    return map(_LoopIndex, range(*args))


class _InterpretedLibdevice:
    """fla 0.6.0's ``tldevice`` (libdevice) with ``log1p``, which the interpreter leaves unimplemented (it returns
    ``None``), as ``log(1 + x)`` (its ``logaddexp`` adds it to the larger argument: the difference is a rounding)."""

    def __init__(self, device):
        self._device = device

    def __getattr__(self, name):
        return getattr(self._device, name)

    @staticmethod
    def log1p(x):
        import triton.language as tl

        return tl.log(1.0 + x)


def _interpreter_shims() -> list[str]:
    """On CPU, where fla 0.6.0's kernels run in the Triton interpreter: every ``fla.ops`` module's ``range`` yields
    :class:`_LoopIndex` (its host code gets ints all the same) and ``fla.ops.utils.op`` gets
    :class:`_InterpretedLibdevice`. Without them its chunk kernels (GLA's state walk, ABC, the additive slot gate of
    ABC / GSA / LightNet) fail there. Returns what was patched."""
    import pkgutil

    import fla.ops

    for info in pkgutil.walk_packages(fla.ops.__path__, "fla.ops."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # modules that need what a CPU machine lacks; the families here do not call them
            continue
        module.range = _loop_range
    ops = importlib.import_module("fla.ops.utils.op")
    ops.tldevice = _InterpretedLibdevice(ops.tldevice)
    return ["loop indices", "log1p"]


def _fix_rodimus_block_flag() -> list[str]:
    """fla 0.6.0's ``RodimusBlock`` takes ``block_residual_in_fp32`` from ``config.residual_in_fp32`` where its model
    reads ``config.block_residual_in_fp32``: with the defaults (True, False) every block past the first asserts that a
    residual was passed and the forward raises. The block reads the model's flag here, as the code intends; the
    checkpoint (parameters, config) is fla 0.6.0's unchanged. Returns what was patched."""
    from fla.models.rodimus import modeling_rodimus

    block = modeling_rodimus.RodimusBlock
    init = block.__init__

    def fixed_init(self, config, layer_idx):
        init(self, config, layer_idx)
        self.block_residual_in_fp32 = config.block_residual_in_fp32

    block.__init__ = fixed_init
    return ["RodimusBlock.block_residual_in_fp32"]


def _shim_flash_attn() -> list[str]:
    """Give each of :data:`FLASH_ATTN_USERS` lacking flash-attn the SDPA stand-in; returns the modules shimmed."""
    shimmed = []
    for name in FLASH_ATTN_USERS:
        module = importlib.import_module(name)
        if getattr(module, "flash_attn_func", None) is None:
            module.flash_attn_func = sdpa_flash_attn_func
            shimmed.append(name)
    return shimmed


def _build(case: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(case["model_type"], **case["fields"]))
    if case.get("perturb"):
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * case["perturb"])
    return model


def _save(model, directory: Path, entry: dict) -> None:
    """``save_pretrained``; where transformers refuses (fla 0.6.0's LinearAttention with ``tie_feature_map_qk`` shares
    the q / k feature maps' tensors without declaring them tied), the config and an untied safetensors file instead,
    which is what ``from_pretrained`` reads."""
    try:
        model.save_pretrained(directory)
    except RuntimeError as error:
        from safetensors.torch import save_file

        entry["save_error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        model.config.save_pretrained(directory)
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  directory / "model.safetensors", metadata={"format": "pt"})  # fmt: skip


def save(out: Path, cases: dict) -> int:
    import fla

    if getattr(fla, "__version__", None) != "0.6.0":
        print(f"save must run with flash-linear-attention 0.6.0; imported fla {fla.__version__} from {fla.__file__}")
        return 2
    _skip_autotune_timing()
    shimmed = _shim_flash_attn()
    swapped = [] if torch.cuda.is_available() else _use_reference_ops()
    patched = [] if torch.cuda.is_available() else _interpreter_shims()
    fixed = _fix_rodimus_block_flag()
    mode = (f"sdpa-shim {shimmed}" if shimmed else "native") + (f", references {swapped}" if swapped else "")
    mode += (f", interpreter shims {patched}" if patched else "") + f", fla bug fixed: {fixed}"
    report = {"fla": fla.__version__, "fla_file": fla.__file__, "torch": torch.__version__, "cases": {}}
    for name, case in cases.items():
        entry = report["cases"].setdefault(name, {})
        entry["mode"] = mode
        try:
            model = _build(case)
        except Exception:
            entry["mode"], entry["build_error"] = "failed", traceback.format_exc(limit=3)
            continue
        entry["keys"] = {k: list(v.shape) for k, v in model.state_dict().items()}
        _save(model, out / name, entry)
        input_ids = _inputs(case["fields"]["vocab_size"])
        try:
            logits = _logits(model, input_ids)
        except Exception:  # e.g. a chunk kernel fla 0.6.0 refuses on this GPU: its recurrent path instead
            entry["forward_error"] = traceback.format_exc(limit=3)
            input_ids = input_ids[:, :SHORT_LEN]
            try:
                logits = _logits(model, input_ids)
                entry["mode"] += f" ({SHORT_LEN} tokens)"
            except Exception:
                entry["mode"] += " (forward failed)"
                entry["forward_error"] += traceback.format_exc(limit=3)
                continue
        torch.save({"input_ids": input_ids, "logits": logits}, out / name / "ref.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


def load(out: Path, cases: dict) -> int:
    return load_cases(out, True, list(cases), lambda name: cases[name].get("logits_ratio", LOGITS_RATIO))


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) != 3 or args[0] not in ("save", "load"):
        sys.exit(f"usage: {sys.argv[0]} save|load OUT_DIR CASES.json")
    directory = Path(args[1])
    directory.mkdir(parents=True, exist_ok=True)
    cases = json.loads(Path(args[2]).read_text())
    sys.exit((save if args[0] == "save" else load)(directory, cases))
