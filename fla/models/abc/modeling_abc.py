"""ABC language models: pre-norm blocks of ABC attention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,g,s}_proj,
attn.{q,k,v}_conv1d, attn.g_norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``,
``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.abc import ABCAttention
from fla.models.abc.configuration_abc import ABCConfig
from fla.models.flops import TokenMixer
from fla.models.gsa.modeling_gsa import SlotMixer
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import linear_mixer_plan


class ABCBlock(FLABlock):
    """One layer: ``ABCAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: ABCConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = ABCAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                num_slots=config.num_slots,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                use_rope=config.use_rope,
                clamp_min=config.clamp_min,
                clamp_max=config.clamp_max,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class ABCPreTrainedModel(FLAPreTrainedModel):
    config_class = ABCConfig
    _no_split_modules = ["ABCBlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj", "g_proj", "s_proj"))
    """Heads (and their slots: ``s_proj``) split over the ranks; the output norm is per head."""

    @classmethod
    def token_mixer(cls, config: ABCConfig) -> TokenMixer:
        return SlotMixer.from_config(config)


class ABCModel(ABCPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` ABCBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = ABCBlock


class ABCForCausalLM(ABCPreTrainedModel, FLAForCausalLM):
    """ABCModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = ABCModel


__all__ = ["ABCBlock", "ABCForCausalLM", "ABCModel", "ABCPreTrainedModel"]
