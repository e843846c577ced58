"""HGRN models (``model_type = "hgrn"``)."""

from fla.models.hgrn.configuration_hgrn import HGRNConfig
from fla.models.hgrn.modeling_hgrn import HGRNForCausalLM, HGRNModel

__all__ = ["HGRNConfig", "HGRNForCausalLM", "HGRNModel"]
