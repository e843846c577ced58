"""MesaNet language models: pre-norm blocks of MesaNet (or hybrid softmax attention) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,a,b,g}_proj,
attn.lambda_params, attn.{q,k}_conv1d, attn.o_norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``,
``model.norm``, ``lm_head``), so its checkpoints load as is. ``lambda_params`` gets its own init
(:meth:`fla.layers.MesaNet.reset_parameters`, called by the shared ``_init_weights``).
"""

from __future__ import annotations

from fla.layers.mesa_net import MesaNet
from fla.models.flops import TokenMixer
from fla.models.mesa_net.configuration_mesa_net import MesaNetConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention
from fla.models.tp_plan import linear_mixer_plan


class MesaNetBlock(FLABlock):
    """One layer: ``MesaNet`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: MesaNetConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = MesaNet(
                hidden_size=config.hidden_size,
                num_heads=config.num_heads,
                head_dim=config.head_dim,
                mode=config.attn_mode,
                use_output_gate=config.use_output_gate,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                norm_eps=config.norm_eps,
                lambda_lower_bound=config.lambda_lower_bound,
                max_cg_step_training=config.max_cg_step_training,
                max_cg_step_decoding=config.max_cg_step_decoding,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class MesaNetPreTrainedModel(FLAPreTrainedModel):
    config_class = MesaNetConfig
    _no_split_modules = ["MesaNetBlock"]

    tensor_parallel_plan = linear_mixer_plan(
        col=("q_proj", "k_proj", "v_proj", "a_proj", "b_proj", "g_proj"),
        shard=("q_conv1d", "k_conv1d", "lambda_params"),
        heads=("num_heads", "num_kv_heads"),
    )
    """Heads split over the ranks: the per-head gates ``a_proj, b_proj`` and ``lambda_params`` go with them."""

    @classmethod
    def token_mixer(cls, config: MesaNetConfig) -> TokenMixer:
        return TokenMixer(
            "mesa", config.num_heads, config.head_dim, config.head_dim, cg_steps=config.max_cg_step_training
        )


class MesaNetModel(MesaNetPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` MesaNetBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = MesaNetBlock


class MesaNetForCausalLM(MesaNetPreTrainedModel, FLAForCausalLM):
    """MesaNetModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = MesaNetModel


__all__ = ["MesaNetBlock", "MesaNetForCausalLM", "MesaNetModel", "MesaNetPreTrainedModel"]
