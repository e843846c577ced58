"""Mamba2 models (``model_type = "mamba2"``; ours win the Auto* registration over transformers' own)."""

from fla.models.mamba2.configuration_mamba2 import Mamba2Config
from fla.models.mamba2.modeling_mamba2 import Mamba2ForCausalLM, Mamba2Model

__all__ = ["Mamba2Config", "Mamba2ForCausalLM", "Mamba2Model"]
