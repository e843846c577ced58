"""Project-wide constants: the label id that losses skip and the dtype names configs and CLIs accept."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
"""Label id that every loss (plain, fused and fused-linear cross-entropy) leaves out; the data
pipeline writes it where no target exists (a document boundary, context-only positions)."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The floating dtypes by their torch names, as configs (``training.mixed_precision_param``) spell them."""

DTYPE_ALIASES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""Short names (the converters' ``--dtype``) of the entries of :data:`DTYPES`."""


def dtype_from_name(name: str) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` or ``fp32`` / ``bf16`` / ``fp16`` as a torch dtype.

    Raises:
        ValueError: naming ``name`` and the accepted names.
    """
    key = DTYPE_ALIASES.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {', '.join([*DTYPES, *DTYPE_ALIASES])}")
    return DTYPES[key]
