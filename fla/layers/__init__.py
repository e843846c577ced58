"""Token mixers as nn.Modules (projections + op + cache handling)."""

from fla.layers.abc import ABCAttention
from fla.layers.attn import Attention
from fla.layers.based import BasedLinearAttention
from fla.layers.comba import Comba
from fla.layers.delta_net import DeltaNet
from fla.layers.forgetting_attn import ForgettingAttention
from fla.layers.gated_deltanet import GatedDeltaNet
from fla.layers.gated_deltaproduct import GatedDeltaProduct
from fla.layers.gla import GatedLinearAttention
from fla.layers.gsa import GatedSlotAttention
from fla.layers.hgrn import HGRNAttention
from fla.layers.hgrn2 import HGRN2Attention
from fla.layers.kda import KimiDeltaAttention
from fla.layers.lightnet import LightNetAttention
from fla.layers.linear_attn import LinearAttention
from fla.layers.mamba import Mamba
from fla.layers.mamba2 import Mamba2
from fla.layers.mesa_net import MesaNet
from fla.layers.mla import MultiheadLatentAttention
from fla.layers.mom import MomAttention
from fla.layers.multiscale_retention import MultiScaleRetention
from fla.layers.nsa import NativeSparseAttention
from fla.layers.path_attn import PaTHAttention
from fla.layers.rebased import ReBasedLinearAttention
from fla.layers.rodimus import RodimusAttention, SlidingWindowSharedKeyAttention
from fla.layers.rwkv6 import RWKV6Attention
from fla.layers.rwkv7 import RWKV7Attention

__all__ = ["Attention"]
__all__ += ["GatedLinearAttention", "MultiScaleRetention"]
__all__ += ["DeltaNet", "GatedDeltaNet"]
__all__ += ["LinearAttention"]
__all__ += ["HGRN2Attention"]
__all__ += ["BasedLinearAttention", "ReBasedLinearAttention"]
__all__ += ["HGRNAttention"]
__all__ += ["LightNetAttention"]
__all__ += ["RodimusAttention", "SlidingWindowSharedKeyAttention"]
__all__ += ["Mamba"]
__all__ += ["MultiheadLatentAttention"]
__all__ += ["Mamba2"]
__all__ += ["Comba", "GatedDeltaProduct"]
__all__ += ["ForgettingAttention"]
__all__ += ["RWKV6Attention"]
__all__ += ["KimiDeltaAttention"]
__all__ += ["GatedSlotAttention", "ABCAttention"]
__all__ += ["MesaNet"]
__all__ += ["MomAttention"]
__all__ += ["RWKV7Attention"]
__all__ += ["NativeSparseAttention"]
__all__ += ["PaTHAttention"]
