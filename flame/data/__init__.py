"""Streaming training data: sources -> online tokenization -> mixing -> packing -> stateful loader.

``DataConfig`` is the trainer's ``[data]`` section; ``build_dataloader`` returns the loader of one
data-parallel rank; ``build_tokenizer`` loads a Hugging Face tokenizer folder. See
``flame/data/loader.py`` for the pipeline and the batch format.
"""

from flame.data.config import DataConfig, SourceSpec
from flame.data.loader import FlameDataLoader, PackedDataset, build_dataloader
from flame.data.packing import IGNORE_INDEX
from flame.data.sources import SourceExhausted
from flame.data.tokenize import TextEncoder, build_tokenizer

__all__ = [
    "IGNORE_INDEX",
    "DataConfig",
    "FlameDataLoader",
    "PackedDataset",
    "SourceExhausted",
    "SourceSpec",
    "TextEncoder",
    "build_dataloader",
    "build_tokenizer",
]
