"""RetNet models (``model_type = "retnet"``)."""

from fla.models.retnet.configuration_retnet import RetNetConfig
from fla.models.retnet.modeling_retnet import RetNetForCausalLM, RetNetModel

__all__ = ["RetNetConfig", "RetNetForCausalLM", "RetNetModel"]
