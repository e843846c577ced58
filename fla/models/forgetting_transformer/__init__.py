"""Forgetting Transformer (FoX, ``model_type = "forgetting_transformer"``)."""

from fla.models.forgetting_transformer.configuration_forgetting_transformer import ForgettingTransformerConfig
from fla.models.forgetting_transformer.modeling_forgetting_transformer import (
    ForgettingTransformerForCausalLM,
    ForgettingTransformerModel,
)

__all__ = ["ForgettingTransformerConfig", "ForgettingTransformerForCausalLM", "ForgettingTransformerModel"]
