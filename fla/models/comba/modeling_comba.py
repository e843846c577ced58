"""Comba language models: pre-norm blocks of Comba (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.layers.N.attn.{q,k,v,a,b,g}_proj``, ``attn.{A_log, dt_bias, decay, D}``,
``attn.{q,k,v}_conv1d``, ``attn.o_norm``, ``attn.o_proj``, ``mlp_norm``, ``mlp.{gate,up,down}_proj``, ...), so its
checkpoints load as is. The gate parameters get their own init (:meth:`fla.layers.Comba.reset_parameters`).
"""

from __future__ import annotations

from fla.layers.comba import Comba
from fla.models.comba.configuration_comba import CombaConfig
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import SHORT_CONVS, linear_mixer_plan


class CombaBlock(FLABlock):
    """One layer: ``Comba`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: CombaConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = Comba(
                hidden_size=config.hidden_size,
                expand_v=config.expand_v,
                head_dim=config.head_dim,
                num_heads=config.num_heads,
                num_v_heads=config.num_v_heads,
                mode=config.attn_mode,
                use_output_gate=config.use_output_gate,
                use_short_conv=config.use_short_conv,
                use_output_correction=config.use_output_correction,
                use_inner_decay=config.use_inner_decay,
                correction_factor=config.correction_factor,
                conv_size=config.conv_size,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class CombaPreTrainedModel(FLAPreTrainedModel):
    config_class = CombaConfig
    _no_split_modules = ["CombaBlock"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj"),
        shard=(*SHORT_CONVS, "A_log", "dt_bias", "decay", "D"),
        heads=("num_heads", "num_v_heads"),
    )
    """Per-head parameters (A_log, dt_bias per value head; decay, D per q/k head) are split with the heads."""

    @classmethod
    def token_mixer(cls, config: CombaConfig) -> TokenMixer:
        heads = config.num_v_heads or config.num_heads
        return TokenMixer.from_head_dim("delta", heads, config.head_dim, config.expand_v)


class CombaModel(CombaPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` CombaBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = CombaBlock


class CombaForCausalLM(CombaPreTrainedModel, FLAForCausalLM):
    """CombaModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = CombaModel


__all__ = ["CombaBlock", "CombaForCausalLM", "CombaModel", "CombaPreTrainedModel"]
