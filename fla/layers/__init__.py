"""Token mixers as nn.Modules (projections + op + cache handling)."""

from fla.layers.attn import Attention
from fla.layers.gla import GatedLinearAttention
from fla.layers.multiscale_retention import MultiScaleRetention

__all__ = ["Attention"]
__all__ += ["GatedLinearAttention", "MultiScaleRetention"]
