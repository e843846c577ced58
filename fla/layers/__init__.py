"""Token mixers as nn.Modules (projections + op + cache handling)."""

from fla.layers.attn import Attention
from fla.layers.delta_net import DeltaNet
from fla.layers.gated_deltanet import GatedDeltaNet
from fla.layers.gla import GatedLinearAttention
from fla.layers.hgrn2 import HGRN2Attention
from fla.layers.lightnet import LightNetAttention
from fla.layers.linear_attn import LinearAttention
from fla.layers.multiscale_retention import MultiScaleRetention

__all__ = ["Attention"]
__all__ += ["GatedLinearAttention", "MultiScaleRetention"]
__all__ += ["DeltaNet", "GatedDeltaNet"]
__all__ += ["LinearAttention"]
__all__ += ["HGRN2Attention"]
__all__ += ["LightNetAttention"]
