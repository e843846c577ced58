"""ABC models (``model_type = "abc"``)."""

from fla.models.abc.configuration_abc import ABCConfig
from fla.models.abc.modeling_abc import ABCForCausalLM, ABCModel

__all__ = ["ABCConfig", "ABCForCausalLM", "ABCModel"]
