"""fla: efficient token mixers (linear attention family) in PyTorch + Triton.

Importing ``fla`` registers its Hugging Face models (``fla.models``) with ``AutoConfig`` /
``AutoModel`` / ``AutoModelForCausalLM``; this imports transformers (a few seconds, once).

As in fla 0.6.0, the package itself re-exports every token-mixer layer (``fla.layers``) and every
model class (``fla.models``' ``*Model`` / ``*ForCausalLM``; the configs stay in ``fla.models``), so
``from fla import GatedDeltaNet, GLAForCausalLM`` works. The list follows the two subpackages' ``__all__``:
a new family's classes appear here without an edit.
"""

__version__ = "0.1.0"

from fla import layers, models  # noqa: E402  (models: registration with the transformers Auto* classes)

_MODEL_SUFFIXES = ("Model", "ForCausalLM")

__all__ = [*layers.__all__, *(name for name in models.__all__ if name.endswith(_MODEL_SUFFIXES))]
globals().update({name: getattr(layers if name in layers.__all__ else models, name) for name in __all__})
