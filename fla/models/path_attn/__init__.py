"""PaTH attention (``model_type = "path_attn"``)."""

from fla.models.path_attn.configuration_path_attention import PaTHAttentionConfig
from fla.models.path_attn.modeling_path_attention import PaTHAttentionForCausalLM, PaTHAttentionModel

__all__ = ["PaTHAttentionConfig", "PaTHAttentionForCausalLM", "PaTHAttentionModel"]
