"""Gated DeltaProduct language models: pre-norm blocks of Gated DeltaProduct (or hybrid softmax attention) and a
SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.layers.N.attn.{q,k,v,b,g}_proj``, with the forget gate
``attn.{a_proj, A_log, dt_bias}``, ``attn.{q,k,v}_conv1d``, ``attn.o_norm``, ``attn.o_proj``, ``mlp_norm``,
``mlp.{gate,up,down}_proj``, ...), so its checkpoints load as is.

No tensor-parallel plan: ``k_proj``, ``v_proj``, ``b_proj`` lay their outputs out ``(householder step, head,
dim)`` (fla's layout), so a rank's heads are not one contiguous slice of their rows.
"""

from __future__ import annotations

from fla.layers.gated_deltaproduct import GatedDeltaProduct
from fla.models.flops import TokenMixer
from fla.models.gated_deltaproduct.configuration_gated_deltaproduct import GatedDeltaProductConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_attention


class GatedDeltaProductBlock(FLABlock):
    """One layer: ``GatedDeltaProduct`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: GatedDeltaProductConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = GatedDeltaProduct(
                hidden_size=config.hidden_size,
                expand_v=config.expand_v,
                head_dim=config.head_dim,
                num_heads=config.num_heads,
                mode=config.attn_mode,
                use_output_gate=config.use_output_gate,
                use_forget_gate=config.use_forget_gate,
                use_short_conv=config.use_short_conv,
                conv_size=config.conv_size,
                norm_eps=config.norm_eps,
                allow_neg_eigval=config.allow_neg_eigval,
                num_householder=config.num_householder,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class GatedDeltaProductPreTrainedModel(FLAPreTrainedModel):
    config_class = GatedDeltaProductConfig
    _no_split_modules = ["GatedDeltaProductBlock"]
    tensor_parallel_plan = None  # see the module docstring

    @classmethod
    def token_mixer(cls, config: GatedDeltaProductConfig) -> TokenMixer:
        # the gated delta rule over num_householder micro-steps per token (queries read at the last one)
        mixer = TokenMixer.from_head_dim("delta", config.num_heads * config.num_householder, config.head_dim,
                                         config.expand_v)  # fmt: skip
        return mixer


class GatedDeltaProductModel(GatedDeltaProductPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` GatedDeltaProductBlocks -> RMSNorm (see :class:`FLAModel`)."""

    block_class = GatedDeltaProductBlock


class GatedDeltaProductForCausalLM(GatedDeltaProductPreTrainedModel, FLAForCausalLM):
    """GatedDeltaProductModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = GatedDeltaProductModel


__all__ = [
    "GatedDeltaProductBlock",
    "GatedDeltaProductForCausalLM",
    "GatedDeltaProductModel",
    "GatedDeltaProductPreTrainedModel",
]
