"""RetNet language models: pre-norm blocks of multi-scale retention (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,g}_proj,
attn.g_norm_swish_gate, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``),
so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.multiscale_retention import MultiScaleRetention
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import (
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.retnet.configuration_retnet import RetNetConfig
from fla.models.tp_plan import linear_mixer_plan


class RetNetBlock(FLABlock):
    """One layer: ``MultiScaleRetention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``.

    As in fla 0.6.0, the config's ``use_short_conv`` / ``conv_size`` do not reach the retention layer.
    """

    def __init__(self, config: RetNetConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = MultiScaleRetention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                num_kv_heads=config.num_kv_heads,
                feature_map=config.feature_map,
                use_output_gate=config.use_output_gate,
                gate_fn=config.hidden_act,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                fuse_norm=config.fuse_norm,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class RetNetPreTrainedModel(FLAPreTrainedModel):
    config_class = RetNetConfig
    _no_split_modules = ["RetNetBlock"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "k_proj", "v_proj", "g_proj"), rank_offset={"head_offset": "num_heads"}
    )
    """The fixed decays depend on the head index: each rank gets its first head's offset."""

    @classmethod
    def token_mixer(cls, config: RetNetConfig) -> TokenMixer:
        return TokenMixer.from_expand("linear", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)


class RetNetModel(RetNetPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` RetNetBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = RetNetBlock


class RetNetForCausalLM(RetNetPreTrainedModel, FLAForCausalLM):
    """RetNetModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = RetNetModel


__all__ = ["RetNetBlock", "RetNetForCausalLM", "RetNetModel", "RetNetPreTrainedModel"]
