"""Transformer++: pre-norm blocks of softmax attention (GQA, RoPE) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,o}_proj,
mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.attn import Attention
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.tp_plan import MLP_REGION, TPPlan, TPRegion
from fla.models.transformer.configuration_transformer import TransformerConfig


class TransformerBlock(FLABlock):
    """One layer: ``Attention`` + ``GatedMLP`` with pre-norms."""

    def __init__(self, config: TransformerConfig, layer_idx: int):
        attn = Attention(
            hidden_size=config.hidden_size,
            num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads,
            qkv_bias=config.qkv_bias,
            qk_norm=config.qk_norm,
            window_size=config.window_size,
            rope_theta=config.rope_theta,
            max_position_embeddings=config.max_position_embeddings,
            layer_idx=layer_idx,
        )
        super().__init__(config, layer_idx, attn)


class TransformerPreTrainedModel(FLAPreTrainedModel):
    config_class = TransformerConfig
    _no_split_modules = ["TransformerBlock"]

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(col=("q_proj", "k_proj", "v_proj"), row=("o_proj",), divide=("num_heads", "num_kv_heads")),
            "mlp": MLP_REGION,
        },
    )
    """The attention reshapes with its own head counts: divided by the degree."""

    @classmethod
    def token_mixer(cls, config: TransformerConfig) -> TokenMixer:
        head_dim = config.hidden_size // config.num_heads
        return TokenMixer("softmax", config.num_heads, head_dim, head_dim, config.window_size)


class TransformerModel(TransformerPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` TransformerBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = TransformerBlock


class TransformerForCausalLM(TransformerPreTrainedModel, FLAForCausalLM):
    """TransformerModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = TransformerModel


__all__ = ["TransformerBlock", "TransformerForCausalLM", "TransformerModel", "TransformerPreTrainedModel"]
