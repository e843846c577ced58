"""Rodimus models (``model_type = "rodimus"``): ``rodimus`` and ``rodimus_plus`` (Rodimus + SW-SKA) blocks."""

from fla.models.rodimus.configuration_rodimus import RodimusConfig
from fla.models.rodimus.modeling_rodimus import RodimusForCausalLM, RodimusModel

__all__ = ["RodimusConfig", "RodimusForCausalLM", "RodimusModel"]
