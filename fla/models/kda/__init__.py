"""KDA (Kimi Delta Attention) models (``model_type = "kda"``)."""

from fla.models.kda.configuration_kda import KDAConfig
from fla.models.kda.modeling_kda import KDAForCausalLM, KDAModel

__all__ = ["KDAConfig", "KDAForCausalLM", "KDAModel"]
