"""HF model -> DCP checkpoint the trainer resumes from (continued pretraining).

    python -m flame.convert.hf_to_dcp --model <HF folder or id> --checkpoint <dump>/checkpoint/step-0

The DCP keys are the model's ``get_model_state_dict`` names, exactly what torchtitan's
ModelWrapper asks for when it loads a model-only checkpoint (``step-0`` of an auto-resumed
run, or ``--checkpoint.initial_load_path <folder> --checkpoint.initial_load_model_only``).
``load_hf_into`` loads an HF safetensors folder straight into a (possibly FSDP-sharded)
model instead, each rank reading only its shards.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from torch import nn

from flame.convert.common import ConvertError, import_fla, key_mismatch, parse_dtype
from flame.paths import is_missing_local, missing


def hf_to_dcp(
    model: str, checkpoint: str, dtype: str = "fp32", overwrite: bool = False, custom_module: str = ""
) -> Path:
    """Write the HF model ``model`` (a folder or hub id) as a model-only DCP checkpoint in ``checkpoint``.

    Tensors are saved in ``dtype`` (fp32 / bf16 / fp16) under the model's state-dict names.
    Returns the checkpoint folder.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from transformers import AutoModelForCausalLM

    out = Path(checkpoint)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConvertError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    torch_dtype = parse_dtype(dtype)
    import_fla(custom_module)
    if is_missing_local(model):
        raise ConvertError(f"{model}: {missing(model)}")
    if Path(model).exists() and not (Path(model) / "config.json").is_file():
        raise ConvertError(f"{model}: not an HF model folder (no config.json)")
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, device_map="cpu")
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConvertError(f"{model}: cannot load the HF model ({first})") from None
    state = {k: v.detach().contiguous() for k, v in get_model_state_dict(hf_model).items()}
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "assuming the intent is to ... in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.save(state, checkpoint_id=str(out), no_dist=True)  # one process writes it all
    return out


def hf_weight_files(path: str | Path) -> dict[str, list[str]]:
    """``{safetensors file: [tensor names]}`` of HF folder ``path``, from its index when it has one.

    Raises ``ConvertError`` naming a shard the index lists but the folder lacks (and how many
    tensors it holds), or a folder without safetensors files.
    """
    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files: dict[str, list[str]] = {}
        for name, file in json.loads(index.read_text())["weight_map"].items():
            files.setdefault(file, []).append(name)
        for file, names in sorted(files.items()):
            if not (path / file).is_file():
                raise ConvertError(
                    f"{path}: the shard {file} is missing ({index.name} lists it for {len(names)} tensor(s), "
                    f"e.g. {sorted(names)[0]}); copy it into the folder"
                )
        return files
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise ConvertError(f"{path}: no *.safetensors files (save the model with save_pretrained)")
    out = {}
    for file in shards:
        with safe_open(str(file), framework="pt") as f:
            out[file.name] = list(f.keys())
    return out


def hf_weight_names(path: str | Path) -> set[str]:
    """Tensor names stored in the safetensors files of HF folder ``path`` (see :func:`hf_weight_files`)."""
    return {name for names in hf_weight_files(path).values() for name in names}


def hf_weight_shapes(path: str | Path) -> dict[str, list[int]]:
    """``{tensor name: shape}`` of HF folder ``path``, read from the safetensors headers only."""
    from safetensors import safe_open

    shapes = {}
    for file, names in hf_weight_files(path).items():
        with safe_open(str(Path(path) / file), framework="pt") as f:
            for name in names:
                shapes[name] = list(f.get_slice(name).get_shape())
    return shapes


def load_hf_into(model: nn.Module, path: str | Path) -> None:
    """Load the safetensors weights of HF folder ``path`` into ``model`` in place.

    ``model`` is the trainer's model (plain, or FSDP/TP-parallelized with DTensor
    parameters); every rank calls this and reads only its own shards. Keys must match
    exactly, except an output embedding tied to the input embedding (HF does not store it).
    Parameters keep their dtype (a bf16 file loads into fp32 parameters).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    path = Path(path)
    if not path.is_dir():
        raise ConvertError(f"{path}: no such HF model folder")
    state = get_model_state_dict(model)
    stored = hf_weight_names(path)
    tied = _tied_output_names(model)
    missing = sorted(k for k in state if k not in stored and k not in tied)
    unexpected = sorted(stored - set(state))
    if missing or unexpected:
        raise ConvertError(key_mismatch(f"{path} does not match the model", missing, unexpected, _HINT))
    to_load = {k: v for k, v in state.items() if k in stored}
    dcp.load(to_load, storage_reader=dcp.HuggingFaceStorageReader(str(path)))
    set_model_state_dict(model, to_load, options=StateDictOptions(strict=False))


_HINT = "does the model config match the checkpoint's?"


def _tied_output_names(model: nn.Module) -> set[str]:
    """State-dict names of the output embedding when it shares the input embedding's weight."""
    get_in, get_out = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None or not getattr(model.config, "tie_word_embeddings", False):
        return set()
    inp, out = get_in(), get_out()
    if inp is None or out is None or inp.weight is not out.weight:
        return set()
    return {f"{name}.weight" for name, module in model.named_modules() if module is out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flame.convert.hf_to_dcp", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="HF model folder (or hub id)")
    parser.add_argument("--checkpoint", required=True, help="DCP folder to write, e.g. <dump>/checkpoint/step-0")
    parser.add_argument("--dtype", default="fp32", help="fp32 (default), bf16 or fp16")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing non-empty folder")
    parser.add_argument("--custom-module", default="", help="module to import first (registers more models)")
    args = parser.parse_args(argv)
    try:
        out = hf_to_dcp(args.model, args.checkpoint, args.dtype, args.overwrite, args.custom_module)
    except ConvertError as err:
        print(f"hf_to_dcp: {err}", file=sys.stderr)
        return 2
    print(f"hf_to_dcp: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
