"""Native sparse attention (``model_type = "nsa"``)."""

from fla.models.nsa.configuration_nsa import NSAConfig
from fla.models.nsa.modeling_nsa import NSAForCausalLM, NSAModel

__all__ = ["NSAConfig", "NSAForCausalLM", "NSAModel"]
