"""Samba models (``model_type = "samba"``): Mamba + sliding-window attention hybrids."""

from fla.models.samba.configuration_samba import SambaConfig
from fla.models.samba.modeling_samba import SambaForCausalLM, SambaModel

__all__ = ["SambaConfig", "SambaForCausalLM", "SambaModel"]
