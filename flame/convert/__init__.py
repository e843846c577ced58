"""Checkpoint converters between Hugging Face folders and flame's DCP checkpoints.

* ``python -m flame.convert.hf_to_dcp --model <HF> --checkpoint <dump>/checkpoint/step-0``:
  continued pretraining from an HF model.
* ``python -m flame.convert.dcp_to_hf --path <dump> --step N --config <json> --tokenizer <tok>``:
  release a checkpoint as an HF folder.
* :func:`load_hf_into`: load an HF folder into the trainer's (sharded) model directly.

The functions behind the commands are ``flame.convert.hf_to_dcp.hf_to_dcp`` and
``flame.convert.dcp_to_hf.dcp_to_hf`` (``flame.convert.hf_to_dcp`` is the module).
"""

# Lazy: ``python -m flame.convert.<module>`` must not import that module twice (runpy warns).
_EXPORTS = {
    "ConvertError": "common",
    "list_steps": "common",
    "step_folder": "common",
    "read_model_tensors": "dcp_to_hf",
    "load_hf_into": "hf_to_dcp",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flame.convert' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"flame.convert.{_EXPORTS[name]}"), name)
