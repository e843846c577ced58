"""RWKV6 (Finch) models (``model_type = "rwkv6"``)."""

from fla.models.rwkv6.configuration_rwkv6 import RWKV6Config
from fla.models.rwkv6.modeling_rwkv6 import RWKV6ForCausalLM, RWKV6Model

__all__ = ["RWKV6Config", "RWKV6ForCausalLM", "RWKV6Model"]
