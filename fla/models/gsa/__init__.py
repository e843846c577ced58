"""GSA models (``model_type = "gsa"``)."""

from fla.models.gsa.configuration_gsa import GSAConfig
from fla.models.gsa.modeling_gsa import GSAForCausalLM, GSAModel

__all__ = ["GSAConfig", "GSAForCausalLM", "GSAModel"]
