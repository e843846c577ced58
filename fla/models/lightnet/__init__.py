"""LightNet models (``model_type = "lightnet"``)."""

from fla.models.lightnet.configuration_lightnet import LightNetConfig
from fla.models.lightnet.modeling_lightnet import LightNetForCausalLM, LightNetModel

__all__ = ["LightNetConfig", "LightNetForCausalLM", "LightNetModel"]
