"""Forgetting Transformer: pre-norm blocks of forgetting attention (FoX) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,f,g,o}_proj,
attn.{q,k}_norm, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.forgetting_attn import ForgettingAttention
from fla.models.flops import TokenMixer
from fla.models.forgetting_transformer.configuration_forgetting_transformer import ForgettingTransformerConfig
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion


class ForgettingTransformerBlock(FLABlock):
    """One layer: ``ForgettingAttention`` + ``GatedMLP`` with pre-norms."""

    def __init__(self, config: ForgettingTransformerConfig, layer_idx: int):
        attn = ForgettingAttention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            qkv_bias=config.qkv_bias,
            qk_norm=config.qk_norm,
            window_size=config.window_size,
            use_output_gate=config.use_output_gate,
            layer_idx=layer_idx,
        )
        super().__init__(config, layer_idx, attn)


class ForgettingTransformerPreTrainedModel(FLAPreTrainedModel):
    config_class = ForgettingTransformerConfig
    _no_split_modules = ["ForgettingTransformerBlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("q_proj", "k_proj", "v_proj", "f_proj", "g_proj"),
                row=("o_proj",),
                divide=("num_heads", "num_kv_heads"),
            ),
            "mlp": MLP_REGION,
        },
        unsupported={"qk_norm": True},
    )
    """Every input projection splits by heads (``f_proj``: one output per head). The qk norms (fla's GroupNorm
    over the flat projections, with its own group count) are not split: ``qk_norm`` models run without TP."""

    @classmethod
    def token_mixer(cls, config: ForgettingTransformerConfig) -> TokenMixer:
        head_dim = config.hidden_size // config.num_heads
        return TokenMixer("softmax", config.num_heads, head_dim, head_dim, config.window_size)


class ForgettingTransformerModel(ForgettingTransformerPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` ForgettingTransformerBlocks -> RMSNorm (see :class:`FLAModel`)."""

    block_class = ForgettingTransformerBlock


class ForgettingTransformerForCausalLM(ForgettingTransformerPreTrainedModel, FLAForCausalLM):
    """ForgettingTransformerModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = ForgettingTransformerModel


__all__ = [
    "ForgettingTransformerBlock",
    "ForgettingTransformerForCausalLM",
    "ForgettingTransformerModel",
    "ForgettingTransformerPreTrainedModel",
]
