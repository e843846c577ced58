"""Linear-attention language models: pre-norm blocks of LinearAttention (or hybrid softmax attention) and a
SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v}_proj,
attn.feature_map_{q,k}.*, attn.norm, attn.o_proj, mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``,
``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

from fla.layers.linear_attn import LinearAttention, feature_dim
from fla.models.flops import TokenMixer
from fla.models.linear_attn.configuration_linear_attn import LinearAttentionConfig
from fla.models.modeling_utils import (
    FLABlock,
    FLAForCausalLM,
    FLAModel,
    FLAPreTrainedModel,
    build_attention,
)
from fla.models.tp_plan import linear_mixer_plan


class LinearAttentionBlock(FLABlock):
    """One layer: ``LinearAttention`` (or ``Attention`` at the config's hybrid layers) + ``GatedMLP``."""

    def __init__(self, config: LinearAttentionConfig, layer_idx: int):
        mixer = build_attention(config, layer_idx)
        if mixer is None:
            mixer = LinearAttention(
                mode=config.attn_mode,
                hidden_size=config.hidden_size,
                expand_k=config.expand_k,
                expand_v=config.expand_v,
                num_heads=config.num_heads,
                num_kv_heads=config.num_kv_heads,
                feature_map=config.feature_map,
                tie_feature_map_qk=config.tie_feature_map_qk,
                norm_q=config.norm_q,
                norm_k=config.norm_k,
                do_feature_map_norm=config.norm_feature_map,
                elementwise_affine=config.elementwise_affine,
                norm_eps=config.norm_eps,
                layer_idx=layer_idx,
            )
        super().__init__(config, layer_idx, mixer)


class LinearAttentionPreTrainedModel(FLAPreTrainedModel):
    config_class = LinearAttentionConfig
    _no_split_modules = ["LinearAttentionBlock"]

    tensor_parallel_plan = linear_mixer_plan(col=("q_proj", "k_proj", "v_proj"))
    """Split by heads. The feature maps act on each head's vector with parameters shared by all heads, so
    (like the per-head output norm) they stay replicated: each rank maps its own heads, and the trainer sums
    their gradients over the ranks."""

    @classmethod
    def token_mixer(cls, config: LinearAttentionConfig) -> TokenMixer:
        """Linear attention with the feature width as key width (hedgehog doubles it, dpfp multiplies it by 8).

        Not counted: the feature maps' matmuls beyond ``6 N`` (their weights act on every head, ``6 N``
        counts them once; ~1.7% of the 340M config's FLOPs with ``elementwise_product``): TokenMixer has
        no field for per-head parameter use."""
        mixer = TokenMixer.from_expand("linear", config.hidden_size, config.num_heads, config.expand_k, config.expand_v)
        return TokenMixer("linear", mixer.heads, feature_dim(config.feature_map, mixer.key_dim), mixer.value_dim)

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """transformers' ``{target: source}`` tied parameters, + ``feature_map_k.* -> feature_map_q.*`` of the
        layers with ``tie_feature_map_qk`` (one module under both of fla's names; it is saved once)."""
        tied = super().get_expanded_tied_weights_keys(all_submodels)
        for path, module in self.named_modules():
            for target, source in (getattr(module, "_tied_weights_keys", None) or {}).items():
                if isinstance(module, LinearAttention):
                    tied[f"{path}.{target}"] = f"{path}.{source}"
        return tied


class LinearAttentionModel(LinearAttentionPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` LinearAttentionBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    block_class = LinearAttentionBlock


class LinearAttentionForCausalLM(LinearAttentionPreTrainedModel, FLAForCausalLM):
    """LinearAttentionModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = LinearAttentionModel


__all__ = [
    "LinearAttentionBlock",
    "LinearAttentionForCausalLM",
    "LinearAttentionModel",
    "LinearAttentionPreTrainedModel",
]
