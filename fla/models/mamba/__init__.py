"""Mamba (v1) models (``model_type = "mamba"``)."""

from fla.models.mamba.configuration_mamba import MambaConfig
from fla.models.mamba.modeling_mamba import MambaForCausalLM, MambaModel

__all__ = ["MambaConfig", "MambaForCausalLM", "MambaModel"]
