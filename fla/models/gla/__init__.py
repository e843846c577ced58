"""Gated Linear Attention models (``model_type = "gla"``)."""

from fla.models.gla.configuration_gla import GLAConfig
from fla.models.gla.modeling_gla import GLAForCausalLM, GLAModel

__all__ = ["GLAConfig", "GLAForCausalLM", "GLAModel"]
