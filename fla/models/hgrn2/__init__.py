"""HGRN2 models (``model_type = "hgrn2"``)."""

from fla.models.hgrn2.configuration_hgrn2 import HGRN2Config
from fla.models.hgrn2.modeling_hgrn2 import HGRN2ForCausalLM, HGRN2Model

__all__ = ["HGRN2Config", "HGRN2ForCausalLM", "HGRN2Model"]
