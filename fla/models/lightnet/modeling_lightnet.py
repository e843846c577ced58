"""LightNet language models: pre-norm blocks of LightNetAttention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v}_proj,
attn.{q,k,v}_conv1d, attn.g_proj.{0,1}, attn.g_norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``,
``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.lightnet import LightNetAttention
from fla.models.flops import TokenMixer
from fla.models.lightnet.configuration_lightnet import LightNetConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import linear_mixer_plan


class LightNetBlock(FLABlock):
    """One layer: ``LightNetAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: LightNetConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = LightNetAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                num_heads=config.num_heads,
                expand_ratio=config.expand_ratio,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                gate_low_rank_dim=config.gate_low_rank_dim,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class LightNetPreTrainedModel(FLAPreTrainedModel):
    config_class = LightNetConfig
    _no_split_modules = ["LightNetBlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj", "g_proj.1"), full_norms=("g_norm",))
    """The output RMSNorm spans all heads (a full norm: its mean square is all-reduced); the gate's low-rank
    input ``g_proj.0`` is replicated (its gradient summed), its output ``g_proj.1`` column-parallel."""

    @classmethod
    def token_mixer(cls, config: LightNetConfig) -> TokenMixer:
        return TokenMixer("linear", config.num_heads, config.expand_ratio, config.hidden_size // config.num_heads)


class LightNetModel(LightNetPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` LightNetBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = LightNetBlock


class LightNetForCausalLM(LightNetPreTrainedModel, FLAForCausalLM):
    """LightNetModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = LightNetModel


__all__ = ["LightNetBlock", "LightNetForCausalLM", "LightNetModel", "LightNetPreTrainedModel"]
