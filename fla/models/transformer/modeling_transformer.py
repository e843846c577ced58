"""Transformer++: pre-norm blocks of softmax attention (GQA, RoPE) and a SwiGLU MLP.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.N.{attn_norm, attn.{q,k,v,o}_proj,
mlp_norm, mlp.{gate,up,down}_proj}``, ``model.norm``, ``lm_head``), so its checkpoints load as is.
"""

from __future__ import annotations

import torch.nn as nn

from fla.layers.attn import Attention
from fla.models.modeling_utils import FLABlock, FLAForCausalLM, FLAModel, FLAPreTrainedModel, build_norm
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


class TransformerModel(TransformerPreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` TransformerBlocks -> RMSNorm (see :class:`FLAModel` for forward)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([TransformerBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = build_norm(config)
        self.gradient_checkpointing = False
        self.post_init()


class TransformerForCausalLM(TransformerPreTrainedModel, FLAForCausalLM):
    """TransformerModel + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.model = TransformerModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()


__all__ = ["TransformerBlock", "TransformerForCausalLM", "TransformerModel", "TransformerPreTrainedModel"]
