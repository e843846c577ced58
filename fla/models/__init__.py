"""fla's Hugging Face models, registered with AutoConfig / AutoModel / AutoModelForCausalLM on import."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from fla.models.abc import ABCConfig, ABCForCausalLM, ABCModel
from fla.models.cache import FLACache
from fla.models.comba import CombaConfig, CombaForCausalLM, CombaModel
from fla.models.delta_net import DeltaNetConfig, DeltaNetForCausalLM, DeltaNetModel
from fla.models.forgetting_transformer import (
    ForgettingTransformerConfig,
    ForgettingTransformerForCausalLM,
    ForgettingTransformerModel,
)
from fla.models.gated_deltanet import GatedDeltaNetConfig, GatedDeltaNetForCausalLM, GatedDeltaNetModel
from fla.models.gated_deltaproduct import GatedDeltaProductConfig, GatedDeltaProductForCausalLM, GatedDeltaProductModel
from fla.models.gla import GLAConfig, GLAForCausalLM, GLAModel
from fla.models.gsa import GSAConfig, GSAForCausalLM, GSAModel
from fla.models.hgrn import HGRNConfig, HGRNForCausalLM, HGRNModel
from fla.models.hgrn2 import HGRN2Config, HGRN2ForCausalLM, HGRN2Model
from fla.models.kda import KDAConfig, KDAForCausalLM, KDAModel
from fla.models.lightnet import LightNetConfig, LightNetForCausalLM, LightNetModel
from fla.models.linear_attn import LinearAttentionConfig, LinearAttentionForCausalLM, LinearAttentionModel
from fla.models.mamba import MambaConfig, MambaForCausalLM, MambaModel
from fla.models.mamba2 import Mamba2Config, Mamba2ForCausalLM, Mamba2Model
from fla.models.mesa_net import MesaNetConfig, MesaNetForCausalLM, MesaNetModel
from fla.models.mla import MLAConfig, MLAForCausalLM, MLAModel
from fla.models.mom import MomConfig, MomForCausalLM, MomModel
from fla.models.nsa import NSAConfig, NSAForCausalLM, NSAModel
from fla.models.path_attn import PaTHAttentionConfig, PaTHAttentionForCausalLM, PaTHAttentionModel
from fla.models.retnet import RetNetConfig, RetNetForCausalLM, RetNetModel
from fla.models.rodimus import RodimusConfig, RodimusForCausalLM, RodimusModel
from fla.models.rwkv6 import RWKV6Config, RWKV6ForCausalLM, RWKV6Model
from fla.models.rwkv7 import RWKV7Config, RWKV7ForCausalLM, RWKV7Model
from fla.models.samba import SambaConfig, SambaForCausalLM, SambaModel
from fla.models.transformer import TransformerConfig, TransformerForCausalLM, TransformerModel

_MODELS = [(TransformerConfig, TransformerModel, TransformerForCausalLM)]
_MODELS.append((GLAConfig, GLAModel, GLAForCausalLM))
_MODELS.append((RetNetConfig, RetNetModel, RetNetForCausalLM))
_MODELS.append((DeltaNetConfig, DeltaNetModel, DeltaNetForCausalLM))
_MODELS.append((GatedDeltaNetConfig, GatedDeltaNetModel, GatedDeltaNetForCausalLM))
_MODELS.append((LinearAttentionConfig, LinearAttentionModel, LinearAttentionForCausalLM))
_MODELS.append((HGRN2Config, HGRN2Model, HGRN2ForCausalLM))
_MODELS.append((HGRNConfig, HGRNModel, HGRNForCausalLM))
_MODELS.append((LightNetConfig, LightNetModel, LightNetForCausalLM))
_MODELS.append((RodimusConfig, RodimusModel, RodimusForCausalLM))
_MODELS.append((MambaConfig, MambaModel, MambaForCausalLM))
_MODELS.append((SambaConfig, SambaModel, SambaForCausalLM))
_MODELS.append((MLAConfig, MLAModel, MLAForCausalLM))
_MODELS.append((Mamba2Config, Mamba2Model, Mamba2ForCausalLM))
_MODELS.append((CombaConfig, CombaModel, CombaForCausalLM))
_MODELS.append((GatedDeltaProductConfig, GatedDeltaProductModel, GatedDeltaProductForCausalLM))
_MODELS.append((ForgettingTransformerConfig, ForgettingTransformerModel, ForgettingTransformerForCausalLM))
_MODELS.append((RWKV6Config, RWKV6Model, RWKV6ForCausalLM))
_MODELS.append((KDAConfig, KDAModel, KDAForCausalLM))
_MODELS.append((GSAConfig, GSAModel, GSAForCausalLM))
_MODELS.append((ABCConfig, ABCModel, ABCForCausalLM))
_MODELS.append((MesaNetConfig, MesaNetModel, MesaNetForCausalLM))
_MODELS.append((MomConfig, MomModel, MomForCausalLM))
_MODELS.append((RWKV7Config, RWKV7Model, RWKV7ForCausalLM))
_MODELS.append((NSAConfig, NSAModel, NSAForCausalLM))
_MODELS.append((PaTHAttentionConfig, PaTHAttentionModel, PaTHAttentionForCausalLM))

for _config, _model, _causal_lm in _MODELS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForCausalLM.register(_config, _causal_lm, exist_ok=True)

__all__ = ["FLACache", "TransformerConfig", "TransformerForCausalLM", "TransformerModel"]
__all__ += ["GLAConfig", "GLAForCausalLM", "GLAModel"]
__all__ += ["RetNetConfig", "RetNetForCausalLM", "RetNetModel"]
__all__ += ["DeltaNetConfig", "DeltaNetForCausalLM", "DeltaNetModel"]
__all__ += ["GatedDeltaNetConfig", "GatedDeltaNetForCausalLM", "GatedDeltaNetModel"]
__all__ += ["LinearAttentionConfig", "LinearAttentionForCausalLM", "LinearAttentionModel"]
__all__ += ["HGRN2Config", "HGRN2ForCausalLM", "HGRN2Model"]
__all__ += ["HGRNConfig", "HGRNForCausalLM", "HGRNModel"]
__all__ += ["LightNetConfig", "LightNetForCausalLM", "LightNetModel"]
__all__ += ["RodimusConfig", "RodimusForCausalLM", "RodimusModel"]
__all__ += ["MambaConfig", "MambaForCausalLM", "MambaModel"]
__all__ += ["SambaConfig", "SambaForCausalLM", "SambaModel"]
__all__ += ["MLAConfig", "MLAForCausalLM", "MLAModel"]
__all__ += ["Mamba2Config", "Mamba2ForCausalLM", "Mamba2Model"]
__all__ += ["CombaConfig", "CombaForCausalLM", "CombaModel"]
__all__ += ["GatedDeltaProductConfig", "GatedDeltaProductForCausalLM", "GatedDeltaProductModel"]
__all__ += ["ForgettingTransformerConfig", "ForgettingTransformerForCausalLM", "ForgettingTransformerModel"]
__all__ += ["RWKV6Config", "RWKV6ForCausalLM", "RWKV6Model"]
__all__ += ["KDAConfig", "KDAForCausalLM", "KDAModel"]
__all__ += ["GSAConfig", "GSAForCausalLM", "GSAModel"]
__all__ += ["ABCConfig", "ABCForCausalLM", "ABCModel"]
__all__ += ["MesaNetConfig", "MesaNetForCausalLM", "MesaNetModel"]
__all__ += ["MomConfig", "MomForCausalLM", "MomModel"]
__all__ += ["RWKV7Config", "RWKV7ForCausalLM", "RWKV7Model"]
__all__ += ["NSAConfig", "NSAForCausalLM", "NSAModel"]
__all__ += ["PaTHAttentionConfig", "PaTHAttentionForCausalLM", "PaTHAttentionModel"]
