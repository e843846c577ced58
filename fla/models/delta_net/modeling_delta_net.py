"""DeltaNet language models: pre-norm blocks of DeltaNet (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,b,g}_proj,
attn.{q,k,v}_conv1d, attn.o_norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``,
``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.delta_net import DeltaNet
from fla.models.delta_net.configuration_delta_net import DeltaNetConfig
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import (
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.tp_plan import linear_mixer_plan


class DeltaNetBlock(FLABlock):
    """One layer: ``DeltaNet`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: DeltaNetConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = DeltaNet(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                use_beta=config.use_beta,
                use_gate=config.use_gate,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                allow_neg_eigval=config.allow_neg_eigval,
                qk_activation=config.qk_activation,
                qk_norm=config.qk_norm,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class DeltaNetPreTrainedModel(FLAPreTrainedModel):
    config_class = DeltaNetConfig
    _no_split_modules = ["DeltaNetBlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj", "b_proj", "g_proj"))
    """Per-head beta from b_proj; the output norm is over one head (replicated)."""

    @classmethod
    def token_mixer(cls, config: DeltaNetConfig) -> TokenMixer:
        return TokenMixer.from_expand("delta", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)


class DeltaNetModel(DeltaNetPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` DeltaNetBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = DeltaNetBlock


class DeltaNetForCausalLM(DeltaNetPreTrainedModel, FLAForCausalLM):
    """DeltaNetModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = DeltaNetModel


__all__ = ["DeltaNetBlock", "DeltaNetForCausalLM", "DeltaNetModel", "DeltaNetPreTrainedModel"]
