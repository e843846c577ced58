"""DeltaNet models (``model_type = "delta_net"``)."""

from fla.models.delta_net.configuration_delta_net import DeltaNetConfig
from fla.models.delta_net.modeling_delta_net import DeltaNetForCausalLM, DeltaNetModel

__all__ = ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel"]
