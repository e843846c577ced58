"""MesaNet models (``model_type = "mesa_net"``)."""

from fla.models.mesa_net.configuration_mesa_net import MesaNetConfig
from fla.models.mesa_net.modeling_mesa_net import MesaNetForCausalLM, MesaNetModel

__all__ = ["MesaNetConfig", "MesaNetForCausalLM", "MesaNetModel"]
