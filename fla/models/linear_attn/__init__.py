"""Linear-attention models (``model_type = "linear_attn"``)."""

from fla.models.linear_attn.configuration_linear_attn import LinearAttentionConfig
from fla.models.linear_attn.modeling_linear_attn import LinearAttentionForCausalLM, LinearAttentionModel

__all__ = ["LinearAttentionConfig", "LinearAttentionForCausalLM", "LinearAttentionModel"]
