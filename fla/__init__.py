"""fla: efficient token mixers (linear attention family) in PyTorch + Triton.

Importing ``fla`` registers its Hugging Face models (``fla.models``) with ``AutoConfig`` /
``AutoModel`` / ``AutoModelForCausalLM``; this imports transformers (a few seconds, once).
"""

__version__ = "0.1.0"

from fla import models  # noqa: E402,F401  (registration with the transformers Auto* classes)
