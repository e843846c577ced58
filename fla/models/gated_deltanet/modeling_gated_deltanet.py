"""Gated DeltaNet language models: pre-norm blocks of Gated DeltaNet (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,a,b,g}_proj,
attn.A_log, attn.dt_bias, attn.{q,k,v}_conv1d, attn.o_norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``,
``model.norm``, ``lm_head``), so its checkpoints load as is. ``A_log`` / ``dt_bias`` get their own init
(:meth:`fla.layers.GatedDeltaNet.reset_parameters`, called by the shared ``_init_weights``).
"""

from __future__ import annotations

from fla.layers.gated_deltanet import GatedDeltaNet
from fla.models.flops import TokenMixer
from fla.models.gated_deltanet.configuration_gated_deltanet import GatedDeltaNetConfig
from fla.models.modeling_utils import (
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.tp_plan import SHORT_CONVS, linear_mixer_plan


class GatedDeltaNetBlock(FLABlock):
    """One layer: ``GatedDeltaNet`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: GatedDeltaNetConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = GatedDeltaNet(
                hidden_size=config.hidden_size,
                expand_v=config.expand_v,
                head_dim=config.head_dim,
                num_heads=config.num_heads,
                num_v_heads=config.num_v_heads,
                mode=config.attn_mode,
                use_gate=config.use_gate,
                use_short_conv=config.use_short_conv,
                allow_neg_eigval=config.allow_neg_eigval,
                conv_size=config.conv_size,
                norm_eps=config.norm_eps,
                output_gate_activation=config.output_gate_activation,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class GatedDeltaNetPreTrainedModel(FLAPreTrainedModel):
    config_class = GatedDeltaNetConfig
    _no_split_modules = ["GatedDeltaNetBlock"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj"),
        shard=(*SHORT_CONVS, "A_log", "dt_bias"),
        heads=("num_heads", "num_v_heads"),
    )
    """The per-value-head gate parameters A_log, dt_bias are split with the heads."""

    @classmethod
    def token_mixer(cls, config: GatedDeltaNetConfig) -> TokenMixer:
        heads = config.num_v_heads or config.num_heads
        return TokenMixer.from_head_dim("delta", heads, config.head_dim, config.expand_v)


class GatedDeltaNetModel(GatedDeltaNetPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` GatedDeltaNetBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = GatedDeltaNetBlock


class GatedDeltaNetForCausalLM(GatedDeltaNetPreTrainedModel, FLAForCausalLM):
    """GatedDeltaNetModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = GatedDeltaNetModel


__all__ = ["GatedDeltaNetBlock", "GatedDeltaNetForCausalLM", "GatedDeltaNetModel", "GatedDeltaNetPreTrainedModel"]
