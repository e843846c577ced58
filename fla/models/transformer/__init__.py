"""Transformer++ (``model_type = "transformer"``)."""

from fla.models.transformer.configuration_transformer import TransformerConfig
from fla.models.transformer.modeling_transformer import TransformerForCausalLM, TransformerModel

__all__ = ["TransformerConfig", "TransformerForCausalLM", "TransformerModel"]
