"""DCP checkpoint -> HF folder (release).

    python -m flame.convert.dcp_to_hf --path <dump> --step -1 --config <model json> --tokenizer <tok>

Reads only the model tensors of ``<dump>/checkpoint/step-N`` (a full training checkpoint's
optimizer, scheduler, data loader and train state are left on disk), loads them strictly
into the model built from ``--config`` and writes safetensors + config.json + the tokenizer
to ``<dump>/hf`` (or ``--out``), loadable with ``AutoModelForCausalLM.from_pretrained``
after ``import fla``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from flame.convert.common import (
    NON_MODEL_STATES,
    ConvertError,
    key_mismatch,
    load_config,
    parse_dtype,
    step_folder,
)


def read_model_tensors(step_dir: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors (top-level DCP entries) of checkpoint folder ``step_dir``, in their stored dtype.

    Nested entries (``optimizer.*``, ``train_state.*``, ...) and the non-model top-level
    states are skipped without being read.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(step_dir))
    try:
        metadata = reader.read_metadata()
    except Exception as err:  # noqa: BLE001 - any unreadable .metadata is a broken checkpoint
        raise ConvertError(f"{step_dir}: unreadable DCP metadata ({type(err).__name__}: {err})") from None
    paths = metadata.planner_data or {}
    state = {}
    for key, meta in metadata.state_dict_metadata.items():
        path = paths.get(key, (key,))
        if len(path) != 1 or key in NON_MODEL_STATES or not isinstance(meta, TensorStorageMetadata):
            continue
        state[key] = torch.empty(meta.size, dtype=meta.properties.dtype)
    if not state:
        raise ConvertError(f"{step_dir}: the checkpoint holds no model tensors at its top level")
    with warnings.catch_warnings():  # "assuming the intent is to ... in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(step_dir), no_dist=True)  # this process reads it all
    return state


def dcp_model_shapes(step_dir: str | Path) -> dict[str, list[int]]:
    """``{name: shape}`` of the model tensors (top-level entries) of DCP folder ``step_dir``, from its metadata."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(step_dir)).read_metadata()
    paths = metadata.planner_data or {}
    return {
        key: list(meta.size)
        for key, meta in metadata.state_dict_metadata.items()
        if len(paths.get(key, (key,))) == 1 and key not in NON_MODEL_STATES and isinstance(meta, TensorStorageMetadata)
    }


def build_hf_model(config: str, custom_module: str = ""):
    """The HF causal LM of ``config`` on CPU in float32 (weights are overwritten by the caller)."""
    from transformers import AutoModelForCausalLM

    hf_config = load_config(config, custom_module)
    return AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with one clear error for missing/unexpected keys or shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConvertError(key_mismatch(f"{source} does not match the model config", missing, unexpected, _HINT))
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ConvertError(
                f"{source}: {key} has shape {list(value.shape)} in the checkpoint but "
                f"{list(expected[key].shape)} in the model; {_HINT}"
            )
    model.load_state_dict(state, strict=True)


_HINT = "is --config the model config the run trained with?"


def dcp_to_hf(
    path: str,
    config: str,
    tokenizer: str | None = None,
    step: int = -1,
    out: str | None = None,
    dtype: str | None = None,
    checkpoint_folder: str = "checkpoint",
    custom_module: str = "",
) -> Path:
    """Export step ``step`` (-1 = latest complete) of dump folder ``path`` as an HF folder; returns it.

    ``dtype`` (fp32 / bf16 / fp16) defaults to the dtype the checkpoint stores; ``out``
    defaults to ``<path>/hf``.
    """
    step_dir = step_folder(path, step, checkpoint_folder)
    state = read_model_tensors(step_dir)
    model = build_hf_model(config, custom_module)
    target = parse_dtype(dtype) or next(iter(state.values())).dtype
    load_strict(model, state, str(step_dir))
    model = model.to(target)
    out_dir = Path(out) if out else Path(path) / "hf"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    if tokenizer:
        save_tokenizer(tokenizer, out_dir)
    return out_dir


def save_tokenizer(tokenizer: str, out_dir: Path) -> None:
    """Copy the tokenizer ``tokenizer`` (folder or hub id) into ``out_dir`` via ``save_pretrained``."""
    from transformers import AutoTokenizer

    from flame.paths import is_missing_local, missing

    if is_missing_local(tokenizer):
        raise ConvertError(f"tokenizer {tokenizer}: {missing(tokenizer)}")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as err:  # noqa: BLE001 - any failure means "no usable tokenizer"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"tokenizer {tokenizer}: cannot load it ({first})") from None
    tok.save_pretrained(str(out_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flame.convert.dcp_to_hf", description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True, help="dump folder (with checkpoint/step-N) or the checkpoint folder")
    parser.add_argument("--step", type=int, default=-1, help="step to export; -1 (default) = latest complete")
    parser.add_argument("--config", required=True, help="model config: .json, folder with config.json, or hub id")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (or hub id) copied into the output")
    parser.add_argument("--out", default=None, help="output folder (default <path>/hf)")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: as stored)")
    parser.add_argument("--checkpoint-folder", default="checkpoint", help="checkpoint.folder of the run")
    parser.add_argument("--custom-module", default="", help="module to import first (registers more models)")
    args = parser.parse_args(argv)
    try:
        out = dcp_to_hf(
            args.path,
            args.config,
            args.tokenizer,
            args.step,
            args.out,
            args.dtype,
            args.checkpoint_folder,
            args.custom_module,
        )
    except ConvertError as err:
        print(f"dcp_to_hf: {err}", file=sys.stderr)
        return 2
    print(f"dcp_to_hf: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
