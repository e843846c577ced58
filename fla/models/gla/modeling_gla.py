"""GLA language models: pre-norm blocks of Gated Linear Attention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,g}_proj,
attn.gk_proj.{0,1}, attn.g_norm_swish_gate, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``,
``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.gla import GatedLinearAttention
from fla.models.flops import TokenMixer
from fla.models.gla.configuration_gla import GLAConfig
from fla.models.modeling_utils import (
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.tp_plan import linear_mixer_plan


class GLABlock(FLABlock):
    """One layer: ``GatedLinearAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: GLAConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = GatedLinearAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                num_kv_heads=config.num_kv_heads,
                feature_map=config.feature_map,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                use_output_gate=config.use_output_gate,
                gate_fn=config.hidden_act,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                clamp_min=config.clamp_min,
                fuse_norm=config.fuse_norm,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class GLAPreTrainedModel(FLAPreTrainedModel):
    config_class = GLAConfig
    _no_split_modules = ["GLABlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj", "g_proj", "gk_proj.1"))
    """gk_proj is low rank: its first Linear stays replicated, its second is split with the heads."""

    @classmethod
    def token_mixer(cls, config: GLAConfig) -> TokenMixer:
        return TokenMixer.from_expand("linear", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)


class GLAModel(GLAPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` GLABlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = GLABlock


class GLAForCausalLM(GLAPreTrainedModel, FLAForCausalLM):
    """GLAModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = GLAModel


__all__ = ["GLABlock", "GLAForCausalLM", "GLAModel", "GLAPreTrainedModel"]
