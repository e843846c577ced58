"""Comba models (``model_type = "comba"``)."""

from fla.models.comba.configuration_comba import CombaConfig
from fla.models.comba.modeling_comba import CombaForCausalLM, CombaModel

__all__ = ["CombaConfig", "CombaForCausalLM", "CombaModel"]
