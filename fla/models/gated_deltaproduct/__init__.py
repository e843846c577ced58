"""Gated DeltaProduct models (``model_type = "gated_deltaproduct"``)."""

from fla.models.gated_deltaproduct.configuration_gated_deltaproduct import GatedDeltaProductConfig
from fla.models.gated_deltaproduct.modeling_gated_deltaproduct import (
    GatedDeltaProductForCausalLM,
    GatedDeltaProductModel,
)

__all__ = ["GatedDeltaProductConfig", "GatedDeltaProductForCausalLM", "GatedDeltaProductModel"]
