"""Fused building blocks of fla (norms, convolution, rotary, SwiGLU MLP, (linear) cross-entropy)."""

from fla.modules.activations import swiglu, swiglu_linear
from fla.modules.conv import ShortConvolution, causal_conv1d
from fla.modules.cross_entropy import FusedCrossEntropyLoss, cross_entropy_loss
from fla.modules.feature_map import DPFPFeatureMap, HadamardFeatureMap, HedgehogFeatureMap, T2RFeatureMap
from fla.modules.gated_norm import (
    FusedLayerNormGated,
    FusedRMSNormGated,
    LayerNormGated,
    RMSNormGated,
    layer_norm_gated,
    rms_norm_gated,
)
from fla.modules.linear_cross_entropy import FusedLinearCrossEntropyLoss, linear_cross_entropy
from fla.modules.linear_kl_div import FusedKLDivLoss, fused_kl_div_loss
from fla.modules.long_conv import ImplicitLongConvolution, LongConvolution
from fla.modules.mlp import GatedMLP
from fla.modules.norm import GroupNorm, LayerNorm, RMSNorm, group_norm, layer_norm, rms_norm
from fla.modules.rotary import RotaryEmbedding, rotary_embedding
from fla.modules.token_shift import TokenShift, token_shift

__all__ = [
    "swiglu",
    "swiglu_linear",
    "ShortConvolution",
    "causal_conv1d",
    "FusedCrossEntropyLoss",
    "cross_entropy_loss",
    "FusedLayerNormGated",
    "FusedRMSNormGated",
    "RMSNormGated",
    "LayerNormGated",
    "layer_norm_gated",
    "rms_norm_gated",
    "FusedLinearCrossEntropyLoss",
    "linear_cross_entropy",
    "GatedMLP",
    "GroupNorm",
    "LayerNorm",
    "RMSNorm",
    "group_norm",
    "layer_norm",
    "rms_norm",
    "RotaryEmbedding",
    "rotary_embedding",
]
__all__ += ["DPFPFeatureMap", "HadamardFeatureMap", "HedgehogFeatureMap", "T2RFeatureMap"]
__all__ += ["TokenShift", "token_shift"]
from fla.modules.norm_linear import (  # noqa: E402  (fla 0.6.0's norm + linear modules, added after the others)
    FusedLayerNormGatedLinear,
    FusedLayerNormSwishGate,
    FusedLayerNormSwishGateLinear,
    FusedRMSNormGatedLinear,
    FusedRMSNormSwishGate,
    FusedRMSNormSwishGateLinear,
    GroupNormLinear,
    L2Norm,
    LayerNormLinear,
    RMSNormLinear,
)

__all__ += ["FusedRMSNormSwishGate", "FusedLayerNormSwishGate", "FusedRMSNormSwishGateLinear"]
__all__ += ["FusedLayerNormSwishGateLinear", "FusedRMSNormGatedLinear", "FusedLayerNormGatedLinear"]
__all__ += ["RMSNormLinear", "LayerNormLinear", "GroupNormLinear", "L2Norm"]
__all__ += ["FusedKLDivLoss", "fused_kl_div_loss"]
__all__ += ["LongConvolution", "ImplicitLongConvolution"]
