"""RWKV7 (Goose) models (``model_type = "rwkv7"``)."""

from fla.models.rwkv7.configuration_rwkv7 import RWKV7Config
from fla.models.rwkv7.modeling_rwkv7 import RWKV7ForCausalLM, RWKV7Model

__all__ = ["RWKV7Config", "RWKV7ForCausalLM", "RWKV7Model"]
