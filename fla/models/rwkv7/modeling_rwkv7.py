"""RWKV7 language models: blocks of RWKV7 time mixing (or hybrid softmax attention) and RWKV7 channel mixing.

Parameter names match fla 0.6.0 (``model.embeddings``, ``model.layers.0.pre_norm`` (with ``norm_first``: RWKV's
``ln0``), ``model.layers.N.{attn_norm, attn.{x_r, x_w, x_k, x_v, x_a, x_g, k_k, k_a, r_k, {r,k,v,o}_proj,
{w,a,g}_lora.lora.{0,2}, v_lora.lora.{0,2} (N > 0), g_norm}, ffn_norm, ffn.{x_k, key, value}}``, ``model.norm``,
``lm_head``), so its checkpoints load as is. Every norm is a LayerNorm (bias with ``norm_bias``). A block::

    x = pre_norm(x)                                        (layer 0 with norm_first)
    h, v_first = attn(attn_norm(x), v_first)               (layer 0 sets v_first, the others read it)
    x = x + h
    x = x + ffn(ffn_norm(x))                               ffn(x) = value(act(key(x + delta * x_k)))

with ``delta = x_{t-1} - x_t`` (:func:`fla.modules.token_shift.token_shift`); ``v_first`` travels from block to
block (:attr:`fla.models.modeling_utils.FLAModel.carried_outputs`). Cache: the time mixing keeps its state and
last token in layer ``i``'s slot (``recurrent_state``, ``conv_state``), the channel mixing its last token as
``ffn_state``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fla.context_parallel import CPContext
from fla.layers.rwkv7 import RWKV7Attention, orthogonal_init
from fla.models.cache import FLACache
from fla.models.flops import TokenMixer
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel
from fla.models.rwkv6.modeling_rwkv6 import (
    FFN_ACTIVATIONS,
    RWKVBlock,
    build_layer_norm,
    ffn_width,
    shifted_channel_mix,
)
from fla.models.rwkv7.configuration_rwkv7 import RWKV7Config
from fla.models.tp_plan import MIXER_DIMS, TPPlan, TPRegion


class RWKV7FeedForward(nn.Module):
    """RWKV7 channel mixing: ``value(act(key(x + delta * x_k)))`` (fla's names; ``intermediate_size`` defaults
    to ``hidden_size * hidden_ratio`` rounded up to a multiple of 32).

    Padding: with a padding mask and no cached token, the real tokens are packed so each sequence's shift
    starts at zero; the output is zero at padding.
    """

    def __init__(
        self,
        hidden_size: int,
        hidden_ratio: float | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "sqrelu",
        layer_idx: int | None = None,
        num_hidden_layers: int | None = None,
    ):
        super().__init__()
        if hidden_act not in FFN_ACTIVATIONS:
            raise ValueError(f"RWKV7FeedForward: hidden_act={hidden_act!r} is not one of {tuple(FFN_ACTIVATIONS)}")
        self.hidden_size, self.layer_idx, self.num_hidden_layers = hidden_size, layer_idx, num_hidden_layers
        self.intermediate_size = ffn_width(hidden_size, 4 if hidden_ratio is None else hidden_ratio, intermediate_size)
        self.x_k = nn.Parameter(torch.zeros(hidden_size))
        self.key = nn.Linear(hidden_size, self.intermediate_size, bias=False)
        self.value = nn.Linear(self.intermediate_size, hidden_size, bias=False)
        self.act_fn = FFN_ACTIVATIONS[hidden_act]
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fla's init: the depth-dependent token-shift mix ``x_k = 1 - (i / hidden_size) ** ((1 - layer / layers)
        ** 4)``, an orthogonal ``key`` and a zero ``value`` (the block's FFN output is zero at init)."""
        if self.x_k.device.type == "meta":
            return
        orthogonal_init(self.key.weight, 1.0)
        self.value.weight.zero_()
        layers = max(self.num_hidden_layers or 1, (self.layer_idx or 0) + 1)
        ratio_1_to_almost0 = 1.0 - (self.layer_idx or 0) / layers
        ddd = torch.arange(self.hidden_size, dtype=torch.float32, device=self.x_k.device) / self.hidden_size
        self.x_k.copy_(1.0 - ddd.pow(ratio_1_to_almost0**4))

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cp_context: CPContext | None = None,
    ) -> torch.Tensor:
        """``x [B, T, hidden_size]`` -> ``[B, T, hidden_size]``; ``attention_mask [B, cached + T]`` (padding);
        ``cp_context``: this rank's slice of sequences split over ranks (:func:`shifted_channel_mix`)."""
        return shifted_channel_mix(self, x, attention_mask, past_key_values, cu_seqlens, cp_context)

    def mix(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The channel mixing of ``x`` given its token-shift difference ``delta`` (both ``[B, T, hidden_size]``)."""
        return self.value(self.act_fn(self.key(torch.addcmul(x, delta, self.x_k))))


class RWKV7Block(RWKVBlock):
    """One layer (see the module docstring); ``forward`` returns ``(hidden_states, None, past_key_values,
    v_first)``."""

    token_local = True  # the channel mixing's token shift reads across ranks itself (context parallel)

    def build_mixer(self, config: RWKV7Config, layer_idx: int) -> nn.Module:
        return RWKV7Attention(
            mode=config.attn_mode,
            hidden_size=config.hidden_size,
            head_dim=config.head_dim,
            num_heads=config.num_heads,
            decay_low_rank_dim=config.decay_low_rank_dim,
            gate_low_rank_dim=config.gate_low_rank_dim,
            a_low_rank_dim=config.a_low_rank_dim,
            v_low_rank_dim=config.v_low_rank_dim,
            norm_eps=config.norm_eps,
            fuse_norm=config.fuse_norm,
            layer_idx=layer_idx,
            value_dim=config.value_dim[layer_idx],
            num_hidden_layers=config.num_hidden_layers,
        )

    def build_ffn(self, config: RWKV7Config, layer_idx: int) -> nn.Module:
        return RWKV7FeedForward(
            config.hidden_size, config.hidden_ratio, config.intermediate_size, config.hidden_act, layer_idx,
            config.num_hidden_layers,
        )  # fmt: skip

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: FLACache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        v_first: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None, FLACache | None, torch.Tensor | None]:
        residual = self.residual_in(hidden_states)
        common = dict(attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache)
        common.update(output_attentions=output_attentions, cu_seqlens=cu_seqlens)
        if isinstance(self.attn, RWKV7Attention):
            hidden_states, attentions, past_key_values, v_first = self.attn(
                self.attn_norm(residual), v_first=v_first, **common, **kwargs
            )
        else:  # a hybrid softmax-attention layer passes v_first on
            hidden_states, attentions, past_key_values = self.attn(self.attn_norm(residual), **common, **kwargs)
        cp = kwargs.get("cp_context")
        hidden_states = self.channel_mix(hidden_states, residual, attention_mask, past_key_values, cu_seqlens, cp)
        return hidden_states, attentions, past_key_values, v_first


class RWKV7PreTrainedModel(FLAPreTrainedModel):
    config_class = RWKV7Config
    _no_split_modules = ["RWKV7Block"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The shared init, then fla's (RWKV-LM's) for the embeddings, ``uniform(-1e-4, 1e-4)``, and an untied
        ``lm_head``: orthogonal with gain ``0.5 * max(1, sqrt(vocab_size / hidden_size))``. The mixers' and
        FFNs' own ``reset_parameters`` set the rest."""
        super()._init_weights(module)
        lm_head = getattr(self, "lm_head", None)
        if isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -1e-4, 1e-4)
        elif module is lm_head and lm_head.weight is not self.get_input_embeddings().weight:
            ratio = self.config.vocab_size / self.config.hidden_size
            orthogonal_init(module.weight, 0.5 * (math.sqrt(ratio) if ratio > 1 else 1.0))

    tensor_parallel_plan = TPPlan(
        embed="model.embeddings",
        head="lm_head",
        regions={
            "attn": TPRegion(
                col=("r_proj", "k_proj", "v_proj", "w_lora.lora.2", "a_lora.lora.2", "g_lora.lora.2", "v_lora.lora.2"),
                row=("o_proj",),
                shard=("k_k", "k_a", "r_k", "g_norm"),
                divide=("num_heads", "num_kv_heads", *MIXER_DIMS),
                local_inputs=("v_first",),
            ),
            "ffn": TPRegion(col=("key",), row=("value",)),
        },
    )
    """Time mixing split by heads: r/k/v, the LoRAs' second matrices (their first ones and the token-shift mixes
    are replicated), ``k_k``, ``k_a``, ``r_k`` and the GroupNorm with the heads. ``v_first`` (layer 0's values,
    the attention region's fourth output) stays this rank's share of the heads from layer 0 to the last layer:
    a local input of every later region. Channel mixing: ``key`` column-, ``value`` row-parallel."""

    @classmethod
    def token_mixer(cls, config: RWKV7Config) -> TokenMixer:
        value_dim = config.value_dim[0] if isinstance(config.value_dim, list) else config.hidden_size
        return TokenMixer("delta", config.num_heads, config.head_dim, value_dim // config.num_heads)


class RWKV7Model(RWKV7PreTrainedModel, FLAModel):
    """Embeddings -> ``num_hidden_layers`` RWKV7Blocks (``v_first`` carried) -> LayerNorm."""

    block_class = RWKV7Block
    carried_outputs = ("v_first",)

    def build_final_norm(self, config: RWKV7Config) -> nn.Module:
        return build_layer_norm(config)


class RWKV7ForCausalLM(RWKV7PreTrainedModel, FLAForCausalLM):
    """RWKV7Model + ``lm_head`` (tied to the embeddings with ``tie_word_embeddings``)."""

    base_model_class = RWKV7Model


__all__ = ["RWKV7Block", "RWKV7FeedForward", "RWKV7ForCausalLM", "RWKV7Model", "RWKV7PreTrainedModel"]
