"""MoM (mixture of memories) models (``model_type = "mom"``)."""

from fla.models.mom.configuration_mom import MomConfig
from fla.models.mom.modeling_mom import MomForCausalLM, MomModel, load_balancing_loss_func

__all__ = ["MomConfig", "MomForCausalLM", "MomModel", "load_balancing_loss_func"]
