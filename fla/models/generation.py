"""``generate()`` for fla models: transformers' GenerationMixin driving an :class:`~fla.models.cache.FLACache`.

transformers would otherwise pre-build a ``DynamicCache`` (keys/values only), which cannot hold
recurrent or convolution states. Here it builds none: the model's forward creates an ``FLACache``
on its first call with ``use_cache=True`` and returns it, and ``generate`` feeds it back. Greedy
search, sampling, beam search (``reorder_cache``) and batched prompts with left padding
(``attention_mask``) work; assisted generation does not (the models are stateful).
"""

from __future__ import annotations

from transformers.generation import GenerationMixin


class FLAGenerationMixin(GenerationMixin):
    """GenerationMixin whose cache is created by the model (an ``FLACache``), never a ``DynamicCache``."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False


__all__ = ["FLAGenerationMixin"]
