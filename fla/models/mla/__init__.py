"""Multi-head latent attention models (``model_type = "mla"``)."""

from fla.models.mla.configuration_mla import MLAConfig
from fla.models.mla.modeling_mla import MLAForCausalLM, MLAModel

__all__ = ["MLAConfig", "MLAForCausalLM", "MLAModel"]
